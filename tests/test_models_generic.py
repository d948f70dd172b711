"""Generic models (issue 18 item 1) and ``fairbench embed`` (item 3): any transformers CLIPModel/SiglipModel
directory through ``hf_clip``, an image-only encoder through ``hf_vision``, any built-in open_clip architecture
through ``open_clip --model-arg arch=``. References come from transformers and open_clip themselves (their own
``get_image_features``/``get_text_features``, ``logits_per_image``, image processors and transforms), never from
fairbench's code."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "synth_generic"


# -- tiny checkpoints written with save_pretrained ------------------------------------------------------
def _tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,-'()/":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[]), len(vocab)


def _save(directory: Path, kind: str) -> Path:
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    torch.manual_seed(0)
    tok, n_vocab = _tokenizer()
    text = {"vocab_size": n_vocab, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2,
                "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                  "num_attention_heads": 2}
    if kind == "clip":
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
        proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    elif kind == "siglip":
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        with torch.no_grad():  # a learned bias away from 0, so that a head that forgets it is caught
            model.logit_bias.fill_(-2.5)
        proc = SiglipImageProcessor(size={"height": 32, "width": 32})
    else:
        model = Dinov2Model(Dinov2Config(**{**vision, "image_size": 32}))
        proc = CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    model.save_pretrained(directory)
    proc.save_pretrained(directory)
    if kind != "vision":
        tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {k: _save(root / k, k) for k in ("clip", "siglip", "vision")}


@pytest.fixture(scope="module")
def tasks_dir(micro_task_dir) -> Path:  # type: ignore[no-untyped-def]
    return micro_task_dir(TASK)


def _test_images(tasks_dir: Path):  # type: ignore[no-untyped-def]
    from fairbench.data.task import get_task

    task = get_task(TASK, (tasks_dir,))
    samples = task.load_split("test", None)
    return samples, samples.images.load(np.arange(len(samples)))


def _pixels(directory: Path, images: list[np.ndarray]) -> torch.Tensor:
    """What transformers' AutoProcessor does with the images (as RGB PIL images)."""
    from PIL import Image
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(str(directory))
    return proc(images=[Image.fromarray(a).convert("RGB") for a in images], return_tensors="pt")["pixel_values"]


def _run(tasks_dir: Path, out: Path, model: str, weights: str, adapt: str, **kw):  # type: ignore[no-untyped-def]
    from fairbench.pipeline import RunConfig, run_cell

    return run_cell(RunConfig(task=TASK, model=model, adapt=adapt, weights=weights, n_boot=0, out=out,
                              tasks_dirs=(tasks_dir,), device="cpu", **kw))


# -- hf_clip: CLIP and SigLIP, zero-shot and linear probe --------------------------------------------------
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_clip_zero_shot_follows_the_models_own_head(kind: str, dirs: dict[str, Path], tasks_dir: Path,
                                                       tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    d = dirs[kind]
    result = _run(tasks_dir, tmp_path, "hf_clip", f"local-dir:{d}", "zeroshot")
    doc = json.loads((result.path / "metrics.json").read_text())
    assert doc["model"]["architecture"]["model_type"] == kind
    w = doc["model"]["weights"]
    assert w["source"] == f"local-dir:{d}" and len(w["config"]["sha256"]) == 64
    assert w["preprocessor"]["file"] == "preprocessor_config.json" and len(w["tokenizer"]["sha256"]) == 64
    fitted = doc["adapt"]["fitted"]
    assert ("sigmoid" in fitted["zeroshot"]["probabilities"]) == (kind == "siglip")

    # the reference: transformers' own calls, prompt ensembling as CLIP does it (mean of normalised embeddings)
    model, tok = AutoModel.from_pretrained(str(d)).eval(), AutoTokenizer.from_pretrained(str(d))
    samples, images = _test_images(tasks_dir)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=_pixels(d, images)).pooler_output
        classes = []
        for c in ("normal", "abnormal"):
            prompts = fitted["prompts"][c]
            if kind == "siglip":
                t = tok(prompts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
                emb = model.get_text_features(input_ids=t["input_ids"]).pooler_output
            else:
                t = tok(prompts, padding=True, max_length=64, truncation=True, return_tensors="pt")
                emb = model.get_text_features(**t).pooler_output
            classes.append(torch.nn.functional.normalize(torch.nn.functional.normalize(emb, dim=-1).mean(0), dim=-1))
        cls = torch.stack(classes)
        logits = model.logit_scale.exp() * torch.nn.functional.normalize(img, dim=-1) @ cls.T
        if kind == "siglip":
            sig = torch.sigmoid(logits + model.logit_bias)
            expected = sig / sig.sum(dim=1, keepdim=True)
        else:
            expected = torch.softmax(logits, dim=1)
        # a single prompt per class: the same formula equals transformers' own logits_per_image
        t = tok(["a", "no b"], padding="max_length", max_length=64, return_tensors="pt")
        pix = _pixels(d, images[:3])
        ours = model.logit_scale.exp() * torch.nn.functional.normalize(
            model.get_image_features(pixel_values=pix).pooler_output, dim=-1) @ torch.nn.functional.normalize(
            model.get_text_features(input_ids=t["input_ids"]).pooler_output, dim=-1).T
        if kind == "siglip":
            ours = ours + model.logit_bias
            theirs = model(input_ids=t["input_ids"], pixel_values=pix).logits_per_image
        else:
            theirs = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], pixel_values=pix).logits_per_image
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    frame = pd.read_parquet(result.path / "predictions.parquet")
    test = frame[frame["split"] == "test"].set_index("sample_id").loc[samples.sample_ids.astype(str)]
    np.testing.assert_allclose(test[["prob_normal", "prob_abnormal"]].to_numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_clip_linear_probe_runs(kind: str, dirs: dict[str, Path], tasks_dir: Path, tmp_path: Path) -> None:
    result = _run(tasks_dir, tmp_path, "hf_clip", f"local-dir:{dirs[kind]}", "linear_probe")
    assert result.metrics["metrics"]["overall"]["auc"] is not None


@pytest.mark.parametrize("kind", ["clip", "siglip", "vision"])
def test_hf_pixels_and_embeddings_equal_transformers(kind: str, dirs: dict[str, Path], tasks_dir: Path) -> None:
    from transformers import AutoModel

    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model, resolve_model_card

    d = dirs[kind]
    name = "hf_vision" if kind == "vision" else "hf_clip"
    card = resolve_model_card(get_model_card(name), f"local-dir:{d}")
    model = build_model(card, f"local-dir:{d}", torch.device("cpu"))
    _, images = _test_images(tasks_dir)
    images = images[:6]
    # non-square and grayscale inputs too
    images += [np.random.default_rng(0).integers(0, 255, (50, 37), dtype=np.uint8),
               np.random.default_rng(1).integers(0, 255, (29, 61, 3), dtype=np.uint8)]
    pixels = model.preprocess(images)
    torch.testing.assert_close(pixels, _pixels(d, images), rtol=0, atol=0)
    ref = AutoModel.from_pretrained(str(d)).eval()
    with torch.no_grad():
        ours = model.image_outputs(pixels)["embedding"]
        theirs = (ref(pixel_values=pixels).last_hidden_state[:, 0] if kind == "vision"
                  else ref.get_image_features(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_hf_vision_probe_runs_and_zero_shot_is_a_one_line_error(dirs: dict[str, Path], tasks_dir: Path,
                                                                  tmp_path: Path) -> None:
    from fairbench.errors import FairbenchError

    result = _run(tasks_dir, tmp_path, "hf_vision", f"local-dir:{dirs['vision']}", "linear_probe")
    assert result.metrics["model"]["architecture"]["model_type"] == "dinov2"
    with pytest.raises(FairbenchError) as err:
        _run(tasks_dir, tmp_path / "zs", "hf_vision", f"local-dir:{dirs['vision']}", "zeroshot")
    assert "\n" not in str(err.value) and "image-only" in str(err.value) and "linear_probe" in str(err.value)


def test_hf_clip_needs_a_directory_and_the_right_model_type(dirs: dict[str, Path], tasks_dir: Path,
                                                           tmp_path: Path) -> None:
    from fairbench.errors import FairbenchError

    with pytest.raises(FairbenchError, match=r"pass --weights local-dir:DIR or hf-hub:ORG/REPO"):
        _run(tasks_dir, tmp_path, "hf_clip", None, "zeroshot")  # type: ignore[arg-type]
    with pytest.raises(FairbenchError, match=r"model_type 'dinov2'.*hf_vision"):
        _run(tasks_dir, tmp_path, "hf_clip", f"local-dir:{dirs['vision']}", "linear_probe")
    with pytest.raises(FairbenchError, match=r"takes no model arguments"):
        _run(tasks_dir, tmp_path, "tinyclip", None, "zeroshot", model_args={"arch": "RN50"})  # type: ignore[arg-type]


def test_a_changed_directory_makes_the_cell_stale(dirs: dict[str, Path], tasks_dir: Path, tmp_path: Path) -> None:
    """The resolved preprocessing is part of the card: editing the directory's image processor (or config)
    must not leave the old cell standing under the same name."""
    import shutil

    from fairbench.errors import ResultsError

    d = tmp_path / "copy"
    shutil.copytree(dirs["clip"], d)
    _run(tasks_dir, tmp_path / "out", "hf_clip", f"local-dir:{d}", "linear_probe")
    assert _run(tasks_dir, tmp_path / "out", "hf_clip", f"local-dir:{d}", "linear_probe").skipped
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    cfg["image_mean"] = [0.5, 0.5, 0.5]
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ResultsError, match="model card 'hf_clip'"):
        _run(tasks_dir, tmp_path / "out", "hf_clip", f"local-dir:{d}", "linear_probe")


# -- open_clip --model-arg arch= ---------------------------------------------------------------------------
def test_open_clip_any_architecture_from_a_file(tasks_dir: Path, tmp_path: Path) -> None:
    import open_clip

    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model, resolve_model_card

    torch.manual_seed(0)
    ref, _, transform = open_clip.create_model_and_transforms("RN50", pretrained=None)
    ref.eval()
    path = tmp_path / "rn50.pt"
    torch.save(ref.state_dict(), path)
    card = resolve_model_card(get_model_card("open_clip"), str(path), {"arch": "RN50"})
    model = build_model(card, str(path), torch.device("cpu"))
    from PIL import Image

    # the preprocessing is open_clip's own for the architecture: its transform's resize, crop and normalisation
    from torchvision import transforms as T

    steps = {type(t).__name__: t for t in transform.transforms}
    pre = card.preprocessing
    assert steps["Resize"].size == pre.image_size and steps["CenterCrop"].size == (pre.image_size, pre.image_size)
    assert steps["Resize"].interpolation == T.InterpolationMode.BICUBIC and pre.interpolation == "bicubic"
    assert pre.resize == "shortest"
    assert tuple(steps["Normalize"].mean) == pre.mean and tuple(steps["Normalize"].std) == pre.std
    yy, xx = np.mgrid[0:260, 0:230]
    images = [np.stack([(yy + xx) % 256, (2 * yy) % 256, (xx * 3) % 256], -1).astype(np.uint8) // (1 + i)
              for i in range(2)]
    pixels = model.preprocess(images)
    theirs = torch.stack([transform(Image.fromarray(a)) for a in images])
    assert (pixels - theirs).abs().mean() < 0.02  # fairbench's batched torch resize vs torchvision's PIL resize
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(theirs), ref.encode_image(theirs), rtol=1e-5, atol=1e-5)
    from fairbench.errors import FairbenchError

    with pytest.raises(FairbenchError, match="needs --model-arg arch=NAME"):
        resolve_model_card(get_model_card("open_clip"), str(path), {})
    with pytest.raises(FairbenchError, match="not an open_clip architecture"):
        resolve_model_card(get_model_card("open_clip"), str(path), {"arch": "RN5O"})


# -- fairbench embed -----------------------------------------------------------------------------------
def _read(path: Path) -> tuple[pd.DataFrame, dict]:  # type: ignore[type-arg]
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.to_pandas(), json.loads(table.schema.metadata[b"fairbench"])


def test_embed_hf_clip_equals_get_image_features_and_reuses_the_cache(dirs: dict[str, Path], tasks_dir: Path,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModel

    from fairbench.adapters.base import AdaptContext
    from fairbench.embed import EmbedConfig, embed

    d = dirs["clip"]
    cfg = EmbedConfig(task=TASK, model="hf_clip", out=tmp_path / "e.parquet", splits=("test",),
                      weights=f"local-dir:{d}", tasks_dirs=(tasks_dir,), device="cpu")
    embed(cfg)
    frame, meta = _read(cfg.out)
    samples, images = _test_images(tasks_dir)
    assert list(frame["sample_id"]) == list(samples.sample_ids.astype(str))
    assert list(frame["label"]) == list(samples.labels)
    assert {f"attr_{a}" for a in samples.attributes} <= set(frame.columns)
    ref = AutoModel.from_pretrained(str(d)).eval()
    with torch.no_grad():
        theirs = ref.get_image_features(pixel_values=_pixels(d, images)).pooler_output.numpy()
    ours = np.stack(frame["image_embedding"].to_list())
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    assert meta["similarity"]["normalises"] is True and meta["model"]["architecture"]["model_type"] == "clip"
    assert set(meta["text_embeddings"]) == {"normal", "abnormal"}
    assert meta["model"]["weights"]["preprocessor"]["sha256"]

    # a second call encodes nothing
    def no_encoding(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("encoded images although the embedding cache holds them")

    monkeypatch.setattr(AdaptContext, "_encode_images", no_encoding)
    cfg.out = tmp_path / "again.parquet"
    embed(cfg)
    frame2, meta2 = _read(cfg.out)
    assert [e["event"] for e in meta2["embedding_cache"]["events"]] == ["hit"]
    np.testing.assert_array_equal(np.stack(frame2["image_embedding"].to_list()), ours)


def test_embed_tinyclip_is_open_clips_encode_image(tasks_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """tinyclip (pretrained on synth_cxr; cached): the file holds open_clip's own encode_image(normalize=False)."""
    from fairbench.adapters.base import AdaptContext
    from fairbench.embed import EmbedConfig, embed
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model

    cfg = EmbedConfig(task=TASK, model="tinyclip", out=tmp_path / "t.parquet", splits=("test",),
                      tasks_dirs=(tasks_dir,), device="cpu")
    embed(cfg)
    frame, meta = _read(cfg.out)
    model = build_model(get_model_card("tinyclip"), None, torch.device("cpu"))
    assert meta["model"]["weights"]["sha256"] == model.weights_info["sha256"]
    _, images = _test_images(tasks_dir)
    with torch.no_grad():
        ref = model.model.encode_image(model.preprocess(images), normalize=False).numpy()
    ours = np.stack(frame["image_embedding"].to_list())
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0)  # unnormalised, as encode_image returns it
    assert meta["similarity"]["normalises"] is True
    monkeypatch.setattr(AdaptContext, "_encode_images", lambda *a, **k: (_ for _ in ()).throw(AssertionError()))
    cfg.out = tmp_path / "t2.parquet"
    embed(cfg)
    assert [e["event"] for e in _read(cfg.out)[1]["embedding_cache"]["events"]] == ["hit"]


@pytest.mark.parametrize("kind", ["clip", "siglip", "vision"])
def test_lora_targets_hit_the_vision_tower_only(kind: str, dirs: dict[str, Path]) -> None:
    import re

    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model, resolve_model_card

    name = "hf_vision" if kind == "vision" else "hf_clip"
    card = resolve_model_card(get_model_card(name), f"local-dir:{dirs[kind]}")
    model = build_model(card, f"local-dir:{dirs[kind]}", torch.device("cpu"))
    pattern = re.compile(model.lora_target_modules())
    hit = [n for n, _ in model.module.named_modules() if pattern.fullmatch(n)]
    assert len(hit) == 4  # two layers x (query, value)
    assert not any(n.startswith("text_model") for n in hit)


def test_hf_vision_lora_trains(dirs: dict[str, Path], tasks_dir: Path, tmp_path: Path) -> None:
    result = _run(tasks_dir, tmp_path, "hf_vision", f"local-dir:{dirs['vision']}", "lora",
                  adapt_args={"epochs": 1, "batch_size": 16})
    assert result.metrics["metrics"]["overall"]["auc"] is not None


def test_open_clip_model_args_are_recorded_and_part_of_the_config(tasks_dir: Path, tmp_path: Path) -> None:
    from fairbench.errors import ResultsError

    result = _run(tasks_dir, tmp_path, "open_clip", "random", "zeroshot", model_args={"arch": "RN50"})
    doc = json.loads((result.path / "metrics.json").read_text())
    assert doc["model"]["args"] == {"arch": "RN50"} and len(doc["config_sha256"]) == 64
    assert doc["model"]["architecture"] == {"model_name": "RN50"}
    assert doc["model"]["preprocessing"]["image_size"] == 224
    # another architecture under the same cell is another model, not a cell to skip
    with pytest.raises(ResultsError, match="model card 'open_clip'"):
        _run(tasks_dir, tmp_path, "open_clip", "random", "zeroshot", model_args={"arch": "RN101"})


def test_a_new_family_is_one_module_and_one_register_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_inputs knows nothing about families: a family registered with one line brings its own default
    weights files and its own tokenizer/config resolution (issue 23: family knowledge inside the family)."""
    from fairbench.models.base import FAMILIES, load_model_card
    from fairbench.models.family import Family
    from fairbench.models.inputs import resolve_inputs

    def my_inputs(inputs):  # type: ignore[no-untyped-def]
        if inputs.weights_dir is None:
            return
        inputs.tokenizer, inputs.tokenizer_source = inputs.weights_dir / "my_vocab.txt", "mine"
        inputs.config = inputs.weights_dir / "my_config.json"

    monkeypatch.setitem(FAMILIES._entries, "my_family",
                        Family(build=lambda card, source, device: None, default_files=("my_weights.bin",),
                               inputs=my_inputs))
    card_path = tmp_path / "my_model.yaml"
    card_path.write_text("name: my_model\nfamily: my_family\ndescription: test\nweights: {source: random}\n"
                         "preprocessing: {image_size: 32}\nlora_targets: [q]\n")
    card = load_model_card(card_path)
    wdir = tmp_path / "w"
    wdir.mkdir()
    missing = resolve_inputs(card, f"local-dir:{wdir}")
    assert any("my_weights.bin" in p for p in missing.problems)
    for name in ("my_weights.bin", "my_vocab.txt", "my_config.json"):
        (wdir / name).write_text("{}")
    inputs = resolve_inputs(card, f"local-dir:{wdir}")
    assert not inputs.problems and inputs.tokenizer_source == "mine"
    info = inputs.info()
    assert info["tokenizer"]["source"] == "mine" and info["config"]["file"] == "my_config.json"


def test_embed_command_line(dirs: dict[str, Path], tasks_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fairbench.cli import app

    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(app, ["embed", "--model", "hf_clip", "--task", TASK, "--split", "val", "--out",
                                      str(out), "--weights", f"local-dir:{dirs['siglip']}", "--tasks-dir",
                                      str(tasks_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    frame, meta = _read(out)
    assert set(frame["split"]) == {"val"} and meta["model"]["architecture"]["model_type"] == "siglip"
    assert "logit_bias" in meta["similarity"]["rule"]
    bad = CliRunner().invoke(app, ["embed", "--model", "hf_clip", "--task", TASK, "--split", "nope", "--out",
                                   str(out), "--weights", f"local-dir:{dirs['siglip']}", "--tasks-dir", str(tasks_dir)])
    assert bad.exit_code != 0 and "--split nope" in str(bad.exception) and "\n" not in str(bad.exception)
