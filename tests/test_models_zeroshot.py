"""Zero-shot rules per family (prompts, ensembling, normalisation) and a zero-shot pass of every tiny card."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from fairbench.errors import CardError
from fairbench.models.base import get_model_card
from fairbench.models.build import build_model
from fairbench.models.chexpert_prompts import CHEXPERT_CLASS_PROMPTS, generate_chexpert_prompts

CPU = torch.device("cpu")
TINY = ["tiny_openai_clip", "tiny_biomedclip", "tiny_medclip_vit", "tiny_medclip_resnet", "tiny_gloria", "tiny_blip2"]


@pytest.fixture(scope="module")
def tasks_dir(micro_task_dir) -> Path:
    root = micro_task_dir("synth_models_small", n=(20, 30, 40))
    # the same data with CheXpert class names (normal -> Atelectasis, abnormal -> Pleural Effusion)
    from fairbench.cards import read_yaml_with_includes

    card = read_yaml_with_includes(root / "synth_models_small" / "synth_models_small.yaml")
    card.update(name="synth_chexpert_names", classes=["Atelectasis", "Pleural Effusion"],
                label={"column": "finding", "map": {"normal": "Atelectasis", "*": "Pleural Effusion"}},
                prompts={"templates": ["a chest x-ray showing {}"],
                         "classnames": {"Atelectasis": ["atelectasis"], "Pleural Effusion": ["pleural effusion"]}})
    card.get("evaluation", {}).pop("no_finding_class", None)  # synth_cxr's "normal" is not a class here
    (root / "synth_chexpert_names").mkdir()
    (root / "synth_chexpert_names" / "synth_chexpert_names.yaml").write_text(yaml.safe_dump(card))
    # one CheXpert class beside one that is not (nih6x200's Atelectasis beside Mass, Nodule, ...)
    card.update(name="synth_mixed_names", classes=["Atelectasis", "Mass"],
                label={"column": "finding", "map": {"normal": "Atelectasis", "*": "Mass"}},
                prompts={"templates": ["a chest x-ray showing {}", "chest radiograph with {}"],
                         "classnames": {"Atelectasis": ["atelectasis"], "Mass": ["mass", "lung mass"]}})
    (root / "synth_mixed_names").mkdir()
    (root / "synth_mixed_names" / "synth_mixed_names.yaml").write_text(yaml.safe_dump(card))
    return root


def _task(name: str, tasks_dir: Path):  # type: ignore[no-untyped-def]
    from fairbench.data.task import get_task

    return get_task(name, (tasks_dir,))


# -- prompts -----------------------------------------------------------------------------------------
def test_chexpert_prompts_reproduce_glorias_seeded_draw() -> None:
    """gloria.py: random.seed(6), then random.sample(all combinations, 5) per class in dictionary order."""
    state = random.getstate()
    random.seed(6)
    upstream = {}
    for name, spec in CHEXPERT_CLASS_PROMPTS.items():
        keys = list(spec)
        combos = [f"{a} {b} {c}" for a in spec[keys[0]] for b in spec[keys[1]] for c in spec[keys[2]]]
        upstream[name] = random.sample(combos, 5)
    random.setstate(state)
    before = random.getstate()
    assert generate_chexpert_prompts(5, seed=6) == upstream
    assert random.getstate() == before  # the global random state is left alone
    assert generate_chexpert_prompts(100, seed=0)["Cardiomegaly"][0] == \
        " cardiac silhouette size is upper limits of normal "  # n >= combinations: all, in order
    assert "small left bilateral pleural effusion" in generate_chexpert_prompts(None, 0)["Pleural Effusion"]


def test_chexpert_style_uses_generator_for_chexpert_classes_only(tasks_dir: Path) -> None:
    from fairbench.models.zeroshot import family_prompts

    model = build_model(get_model_card("tiny_medclip_vit"), "random", CPU)
    prompts, record = family_prompts(model, _task("synth_chexpert_names", tasks_dir))
    assert record["sources"] == {"Atelectasis": "chexpert:Atelectasis", "Pleural Effusion": "chexpert:Pleural Effusion"}
    assert prompts == [generate_chexpert_prompts(3, 0)["Atelectasis"], generate_chexpert_prompts(3, 0)["Pleural Effusion"]]
    prompts, record = family_prompts(model, _task("synth_models_small", tasks_dir))
    assert record["sources"] == {"normal": "templates", "abnormal": "templates"}  # 'abnormal' is no CheXpert class
    assert prompts[0][0] == "a chest x-ray showing no acute cardiopulmonary abnormality"


def test_chexpert_style_never_mixes_generated_prompts_with_templates(tasks_dir: Path) -> None:
    """issue 21 item 13: on nih6x200 Atelectasis got ten generated CheXpert prompts and the other classes the
    task templates. With one class outside CheXpert's five, every class takes the task's templates x names
    (built here from the card text, not by fairbench), and the record says so per class."""
    from fairbench.models.zeroshot import family_prompts

    for name in ("tiny_medclip_vit", "tiny_gloria"):
        model = build_model(get_model_card(name), "random", CPU)
        prompts, record = family_prompts(model, _task("synth_mixed_names", tasks_dir))
        templates = ["a chest x-ray showing {}", "chest radiograph with {}"]
        assert prompts == [[t.format(n) for t in templates for n in ["atelectasis"]],
                           [t.format(n) for t in templates for n in ["mass", "lung mass"]]]
        assert record["sources"] == {"Atelectasis": "templates", "Mass": "templates"}
        assert record["n_prompts"] == {"Atelectasis": 2, "Mass": 4}
        assert "Mass have no CheXpert prompts" in record["note"]


# -- ensembling rules --------------------------------------------------------------------------------
def test_medclip_rule_is_mean_over_prompts_of_clamped_scaled_cosine(tasks_dir: Path) -> None:
    model = build_model(get_model_card("tiny_medclip_vit"), "random", CPU)
    with torch.no_grad():
        model.module.logit_scale.fill_(7.0)  # clamped to 4.6052 -> x100
        task = _task("synth_chexpert_names", tasks_dir)
        head = model.zeroshot_head(task)
        assert head.rule == "mean_logit"
        emb = torch.randn(5, 16)
        expected = []
        for prompts in head.prompts:
            t = torch.nn.functional.normalize(model.encode_text(model.tokenize(prompts)), dim=-1)
            cos = torch.nn.functional.normalize(emb, dim=-1) @ t.T
            expected.append((torch.tensor(4.6052).exp() * cos).mean(dim=1))
        torch.testing.assert_close(head.score({"embedding": emb}), torch.stack(expected, 1), rtol=1e-5, atol=1e-4)


def test_gloria_rule_max_over_prompts_then_zscore_per_class(tasks_dir: Path) -> None:
    model = build_model(get_model_card("tiny_gloria"), "random", CPU)
    task = _task("synth_chexpert_names", tasks_dir)
    head = model.zeroshot_head(task)
    assert head.rule == "max_logit" and head.needs == ("embedding", "local")
    with torch.no_grad():
        out = model.image_outputs(torch.randn(6, 3, 32, 32))
        scores = head.score(out)
        for c, prompts in enumerate(head.prompts):
            tokens = model.tokenize(prompts)
            word, sent, sents = model.text_outputs(tokens)
            sims = model.full_similarity(out, (word, sent, model.cap_lens(tokens, sents)))
            torch.testing.assert_close(scores[:, c], sims.max(dim=1).values)
        z = head.finalize(scores)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0)
    with pytest.raises(CardError, match="cannot be averaged"):
        model.zeroshot_head(task, ensemble="mean_embedding")


def test_gloria_local_similarity_counts_characters_like_upstream() -> None:
    model = build_model(get_model_card("tiny_gloria"), "random", CPU)
    tokens = model.tokenize(["mild atelectasis", " cardiomegaly unchanged "])
    _, _, sents = model.text_outputs(tokens)
    assert model.cap_lens(tokens, sents) == [16, 24]  # characters of the raw prompt, as upstream's cap_lens
    model.word_count = "words"
    assert model.cap_lens(tokens, sents) == [3, 3]  # two words + [SEP]


def test_blip2_similarity_is_max_over_queries() -> None:
    model = build_model(get_model_card("tiny_blip2"), "random", CPU)
    img = torch.randn(3, 4 * 16)
    txt = torch.randn(2, 16)
    per_query = torch.nn.functional.normalize(img.view(3, 4, 16), dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    torch.testing.assert_close(model.similarity(img, txt), per_query.max(dim=1).values)


# -- a zero-shot pass of every tiny card through the pipeline -----------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_every_tiny_card_runs_zero_shot(name: str, tasks_dir: Path, tmp_path: Path) -> None:
    from fairbench.pipeline import RunConfig, run_cell

    result = run_cell(RunConfig(task="synth_models_small", model=name, weights="random", n_boot=0, out=tmp_path,
                                tasks_dirs=(tasks_dir,), device="cpu"))
    doc = json.loads((result.path / "metrics.json").read_text())
    assert doc["model"]["name"] == name
    weights = doc["model"]["weights"]
    assert (weights["source"], weights["sha256"]) == ("random", "random")
    assert len(weights["tokenizer"]["sha256"]) == 64  # the tokenizer is real files even with random weights
    fitted = doc["adapt"]["fitted"]
    assert set(fitted["prompts"]) == {"normal", "abnormal"} and fitted["zeroshot"]["rule"]
    overall = doc["metrics"]["overall"]
    assert overall["n"] == 40 and overall["auc"] is not None
    import pandas as pd

    frame = pd.read_parquet(result.path / "predictions.parquet")
    probs = frame[["prob_normal", "prob_abnormal"]].to_numpy()
    assert (probs >= 0).all() and abs(probs.sum(1) - 1).max() < 1e-6
