"""FairVLMed: the npz layout, -1 = unknown per attribute, legacy keys, note summaries."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_data import write_fairvlmed
from hypothesis import given
from hypothesis import strategies as st

from fairbench.data.fairvlmed import FairVLMedLoader, truncate_words
from fairbench.data.task import get_task
from fairbench.errors import CardError, DataError


@pytest.fixture(scope="module")
def card():
    return get_task("fairvlmed")


@pytest.mark.parametrize("test_folder", ["Test", "Testing"])
def test_loads_each_split_with_unknowns_left_out_per_attribute(tmp_path, card, test_folder):
    written = write_fairvlmed(tmp_path, test_folder=test_folder)
    test = card.load_split("test", tmp_path)
    rows = written[test_folder]
    assert list(test.sample_ids) == [r["id"] for r in rows]
    assert test.labels.tolist() == [r["glaucoma"] for r in rows]
    for r, eth, lang, race, gender in zip(rows, test.attributes["ethnicity"], test.attributes["language"],
                                          test.attributes["race"], test.attributes["gender"]):
        assert eth == {0: "Non-Hispanic", 1: "Hispanic", -1: None}[r["ethnicity"]]
        assert lang == {0: "English", 1: "Spanish", 2: "Other", -1: None}[r["language"]]
        assert race == ["Asian", "Black", "White"][r["race"]] and gender == ["Female", "Male"][r["gender"]]
    # -1 leaves a sample out of that attribute's groups only: the sample itself stays in the task
    assert len(test) == len(rows) and any(e is None for e in test.attributes["ethnicity"])
    assert len(card.load_split("train", tmp_path)) == 12 and len(card.load_split("val", tmp_path)) == 8


def test_texts_are_summaries_cut_at_a_word_boundary(tmp_path, card):
    written = write_fairvlmed(tmp_path, notes_name="gpt-4_summarized_notes.csv")  # the README's spelling
    val = card.load_split("val", tmp_path)
    for text, r in zip(val.texts, written["Validation"]):
        assert len(text) <= 180 and r["summary"].startswith(text)
        assert r["summary"][len(text)] == " "  # cut between two words


def test_images_decode_from_npz(tmp_path, card):
    write_fairvlmed(tmp_path, image_shape=(20, 16), float_images=True)
    imgs = card.load_split("train", tmp_path).images.load(np.array([0, 3]))
    assert imgs[0].shape == (20, 16) and imgs[0].dtype == np.uint8


def test_legacy_hispanic_key_and_maritalstatus_column(tmp_path):
    written = write_fairvlmed(tmp_path, legacy_hispanic=True)
    loader = FairVLMedLoader({}, source="card")
    raw = loader.load("Training", tmp_path)
    assert raw.columns["ethnicity"].tolist() == [r["ethnicity"] for r in written["Training"]]
    assert raw.columns["maritalstatus"].tolist() == [r["maritalstatus"] for r in written["Training"]]


def test_missing_notes_file_names_both_spellings(tmp_path, card):
    write_fairvlmed(tmp_path, notes_name="")
    with pytest.raises(DataError, match="gpt4_summarized_notes.csv .*or gpt-4_summarized_notes.csv"):
        card.load_split("val", tmp_path)
    raw = FairVLMedLoader({"text": "none"}, source="card").load("Validation", tmp_path)
    assert raw.texts is None
    raw = FairVLMedLoader({"text": "note"}, source="card").load("Validation", tmp_path)
    assert raw.texts[0].startswith("raw note")


def test_missing_split_folder_and_bad_options(tmp_path):
    write_fairvlmed(tmp_path, n={"Training": 2})
    with pytest.raises(DataError, match=r"Validation"):
        FairVLMedLoader({}, source="card").load("Validation", tmp_path)
    with pytest.raises(CardError, match="field 'text' must be one of summary, note, none"):
        FairVLMedLoader({"text": "gpt"}, source="card")


def test_corrupt_npz_is_an_error_unless_tolerated(tmp_path):
    write_fairvlmed(tmp_path, n={"Training": 4})
    bad = tmp_path / "Training" / "data_00002.npz"
    bad.write_bytes(bad.read_bytes()[:100])
    loader = FairVLMedLoader({}, source="card")
    with pytest.raises(DataError, match="data_00002.npz: unreadable npz.*--allow-skip-unreadable"):
        loader.load("Training", tmp_path)
    loader.tolerate_unreadable = True
    raw = loader.load("Training", tmp_path)
    assert list(raw.sample_ids) == ["data_00001", "data_00003", "data_00004"]
    assert [sid for sid, _ in loader.unreadable_samples["Training"]] == ["data_00002"]


@given(st.text(alphabet=st.sampled_from("ab c\n"), max_size=60), st.integers(1, 30))
def test_truncate_words_properties(text, limit):
    out = truncate_words(text, limit)
    assert len(out) <= limit
    assert text.strip().startswith(out)
    rest = text.strip()[len(out):]
    if rest and out:  # cut at a boundary, unless a single word was longer than the limit
        assert rest[0].isspace() or " " not in out and "\n" not in out


def test_truncate_words_examples():
    assert truncate_words("short", 180) == "short"
    assert truncate_words("hello world again", 11) == "hello world"
    assert truncate_words("hello world again", 13) == "hello world"
    assert truncate_words("abcdefgh", 4) == "abcd"
