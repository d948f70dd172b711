"""Model cards validate; missing weights are one clear error (file/dir, card, where to get them), never a
silent random init; `fairbench ls models` reports what is present locally."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairbench.errors import CardError, WeightsError
from fairbench.models.base import cards_dir, get_model_card, load_model_card, model_names
from fairbench.models.build import build_model
from fairbench.models.status import weights_status

REAL = ["clip_vit_b16", "clip_vit_b32", "biomedclip", "medclip_vit", "medclip_resnet", "gloria", "blip2"]
TINY = ["tiny_openai_clip", "tiny_biomedclip", "tiny_medclip_vit", "tiny_medclip_resnet", "tiny_gloria", "tiny_blip2"]
FAMILY = {"clip_vit_b16": "open_clip", "clip_vit_b32": "open_clip", "biomedclip": "open_clip",
          "medclip_vit": "medclip", "medclip_resnet": "medclip", "gloria": "gloria", "blip2": "blip2"}


def test_every_card_file_validates() -> None:
    names = model_names()
    for name in REAL + TINY:
        assert name in names
    for path in sorted(cards_dir().glob("*.yaml")):
        card = load_model_card(path)
        assert card.name == path.stem and card.description
        assert card.lora_targets, f"{path}: no LoRA targets"
        assert card.prompt_style in ("templates", "chexpert")
        if card.tiny:
            assert card.name == "tinyclip" or card.weights_source == "random"


@pytest.mark.parametrize("name", REAL)
def test_real_cards_describe_their_weights(name: str) -> None:
    card = get_model_card(name)
    assert card.family == FAMILY[name] and not card.tiny
    assert card.weights_obtain and card.weights_source != "random"
    assert card.preprocessing.image_size == 224


@pytest.mark.parametrize("name", REAL)
def test_missing_weights_name_the_file_card_and_source(name: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    card = get_model_card(name)
    with pytest.raises(WeightsError) as err:
        build_model(card, None, torch.device("cpu"))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"model '{name}'" in msg and "Get them from:" in msg and "--weights random" in msg
    source = card.weights_source
    if source.startswith("hf-hub:"):
        assert source in msg and "not in the local Hugging Face cache" in msg
        assert "HF_HUB_OFFLINE is set" in msg or "--allow-download" in msg
    else:
        assert "weights" in msg and ("gloria" in msg or "medclip" in msg)


def test_missing_file_inside_a_weights_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("not the weights")
    with pytest.raises(WeightsError, match=r"model 'tiny_medclip_vit'.*has no pytorch_model\.bin"):
        build_model(get_model_card("tiny_medclip_vit"), f"local-dir:{tmp_path}", torch.device("cpu"))
    with pytest.raises(WeightsError, match="weights file not found"):
        build_model(get_model_card("tiny_gloria"), str(tmp_path / "nope.ckpt"), torch.device("cpu"))


def test_missing_tokenizer_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MedCLIP's zip has no tokenizer: it comes from Bio_ClinicalBERT in the HF cache, and its absence is an
    error naming it (a real card with --weights random still needs its tokenizer)."""
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="tokenizer 'hf-hub:emilyalsentzer/Bio_ClinicalBERT'"):
        build_model(get_model_card("medclip_vit"), "random", torch.device("cpu"))


def test_random_weights_only_when_asked_and_recorded() -> None:
    model = build_model(get_model_card("tiny_gloria"), "random", torch.device("cpu"))
    info = model.weights_info
    assert (info["source"], info["sha256"]) == ("random", "random")
    assert info["tokenizer"]["source"] == "tiny" and "vocab.txt" in info["tokenizer"]["files"]  # still recorded


def test_card_schema_errors_are_one_line(tmp_path: Path) -> None:
    src = (cards_dir() / "tiny_gloria.yaml").read_text()
    bad = tmp_path / "tiny_gloria.yaml"
    bad.write_text(src.replace("resize: longest_pad", "resize: longest_pad\n  interpolation2: x"))
    with pytest.raises(CardError, match="interpolation2"):
        load_model_card(bad)
    bad.write_text(src.replace("  load_size: 40\n", ""))
    with pytest.raises(CardError, match="load_size"):
        load_model_card(bad)


def test_weights_status_for_every_kind_of_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert weights_status(get_model_card("tiny_gloria")) == "random init"
    assert weights_status(get_model_card("gloria")).startswith("missing (")
    assert weights_status(get_model_card("medclip_vit")).startswith("missing (")
    assert weights_status(get_model_card("biomedclip")).startswith("not in HF cache")
    snap = tmp_path / "hub" / "models--microsoft--BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" / "snapshots" / "c0"
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("c0")
    for f in ("open_clip_config.json", "tokenizer_config.json", "vocab.txt"):
        (snap / f).write_text("{}")
    assert weights_status(get_model_card("biomedclip")) == "HF cache lacks open_clip_pytorch_model.bin"
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"")
    assert weights_status(get_model_card("biomedclip")) == "found (HF cache)"
    monkeypatch.setenv("FAIRBENCH_CACHE", str(tmp_path / "fb"))
    (tmp_path / "fb" / "weights" / "medclip-vit").mkdir(parents=True)
    assert "missing pytorch_model.bin" in weights_status(get_model_card("medclip_vit"))
    (tmp_path / "fb" / "weights" / "medclip-vit" / "pytorch_model.bin").write_bytes(b"")
    assert weights_status(get_model_card("medclip_vit")) == "found"


def test_ls_models_lists_family_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    from fairbench.report.listing import list_things

    list_things("models")
    out = capsys.readouterr().out
    for name in REAL + TINY:
        assert name in out
    assert "gloria" in out and "random init" in out


def test_cli_run_without_weights_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    env = {**__import__("os").environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "FAIRBENCH_CACHE": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-m", "fairbench", "run", "--model", "medclip_resnet", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    # every missing piece in one message: the weights directory and the tokenizer from the HF cache
    assert err.startswith("error: 2 things are missing: (1) model 'medclip_resnet': weights directory not found")
    assert "(2) model 'medclip_resnet': tokenizer 'hf-hub:emilyalsentzer/Bio_ClinicalBERT'" in err
    assert "`hf download emilyalsentzer/Bio_ClinicalBERT vocab.txt`" in err
    assert not (tmp_path / "out" / "synth_cxr" / "medclip_resnet").exists() or not list(
        (tmp_path / "out").rglob("metrics.json"))


def test_cli_run_checks_tokenizer_and_data_root_before_building(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**__import__("os").environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "FAIRBENCH_CACHE": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-m", "fairbench", "run", "--task", "chexpert5", "--model", "gloria",
                           "--weights", "random", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: 2 things are missing: (1) --weights random replaces only the weights; model "
                          "'gloria': tokenizer 'hf-hub:emilyalsentzer/Bio_ClinicalBERT'"), err
    assert "(2) task 'chexpert5' reads a real dataset: pass --data-root" in err


def test_hf_download_needs_explicit_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    from fairbench.models.weights import allow_downloads, downloads_allowed

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert not downloads_allowed()
    with allow_downloads():
        assert not downloads_allowed()  # HF_HUB_OFFLINE=1 in the tests wins over --allow-download
        with pytest.raises(WeightsError, match="HF_HUB_OFFLINE is set"):
            build_model(get_model_card("blip2"), None, torch.device("cpu"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with allow_downloads():
        assert downloads_allowed()
    assert not downloads_allowed()
