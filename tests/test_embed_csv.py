"""Issue 18's "done when" for ``fairbench embed``: a folder of 224x224 PNGs described by a CSV (the ``csv`` loader,
its card written by ``fairbench tasks new``), embedded through ``--model hf_clip --weights local-dir:DIR`` on the
command line, gives the image embeddings that transformers' own ``CLIPProcessor`` + ``get_image_features`` (and
``SiglipProcessor``'s image processor + ``SiglipModel.get_image_features``) give for the same PNG files, within 1e-4
relative. The reference reads the PNGs with PIL and never touches fairbench's code."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import write_csv
from PIL import Image
from test_models_generic import _tokenizer as _clip_tokenizer  # the one tiny CLIP tokenizer of the hf tests
from typer.testing import CliRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_IMAGES = 8


def _write_pngs(root: Path) -> Path:
    """Eight 224x224 PNGs (RGB noise, RGB gradients, one grayscale) and a CSV naming them, with a label, two
    attributes and a split column."""
    rng = np.random.default_rng(0)
    (root / "png").mkdir(parents=True)
    rows = []
    y, x = np.mgrid[0:224, 0:224]
    for i in range(N_IMAGES):
        if i % 3 == 0:
            img = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        elif i == 4:
            img = (127 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0)).clip(0, 255).astype(np.uint8)  # grayscale
        else:
            img = np.stack([(x * (k + 1) + y * i) % 256 for k in range(3)], -1).astype(np.uint8)
        Image.fromarray(img).save(root / "png" / f"img{i}.png")
        rows.append({"path": f"png/img{i}.png", "finding": ["normal", "abnormal"][i % 2],
                     "sex": ["F", "M"][(i // 2) % 2], "site": ["a", "b", "c"][i % 3],
                     "fold": ["train", "val", "test", "test"][i % 4]})
    manifest = root / "images.csv"
    return write_csv(manifest, rows)


def _save(directory: Path, kind: str) -> Path:
    """A tiny random CLIPModel / SiglipModel at 224 px (patch 32), saved with save_pretrained beside its image
    processor (transformers' own defaults for the class: CLIP's shortest side 224 + centre crop 224 with OpenAI's
    mean/std; SigLIP's 224x224 with mean = std = 0.5) and a tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(3)
    tok, n_vocab = _clip_tokenizer()
    text = {"vocab_size": n_vocab, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    vision = {"image_size": 224, "patch_size": 32, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2}
    if kind == "clip":
        model, proc = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)), CLIPImageProcessor()
    else:
        model, proc = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)), SiglipImageProcessor()
    model.save_pretrained(directory)
    proc.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def csv_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The PNG folder's CSV and the tasks folder ``fairbench tasks new`` wrote for it."""
    from fairbench.cli import app

    root = tmp_path_factory.mktemp("pngs")
    manifest = _write_pngs(root / "data")
    tasks = root / "tasks"
    result = CliRunner().invoke(app, ["tasks", "new", "pngs", "--csv", str(manifest), "--image", "path", "--label",
                                      "finding", "--attributes", "sex,site", "--split", "fold", "--out", str(tasks)])
    assert result.exit_code == 0, result.output
    return manifest, tasks


def _reference(directory: Path, kind: str, files: list[Path]) -> np.ndarray:
    """transformers alone: the processor (CLIPProcessor / SiglipProcessor's image part) on the PNGs opened with
    PIL, then the model's get_image_features; pooler_output is the projected embedding in transformers 5."""
    import transformers
    from transformers import CLIPModel, CLIPProcessor, SiglipImageProcessor, SiglipModel

    assert int(transformers.__version__.split(".")[0]) >= 5  # pooler_output below is the 5.x return type
    images = [Image.open(f).convert("RGB") for f in files]
    if kind == "clip":
        pixels = CLIPProcessor.from_pretrained(str(directory))(images=images, return_tensors="pt")["pixel_values"]
        model = CLIPModel.from_pretrained(str(directory)).eval()
    else:
        pixels = SiglipImageProcessor.from_pretrained(str(directory))(images=images, return_tensors="pt")["pixel_values"]
        model = SiglipModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        return model.get_image_features(pixel_values=pixels).pooler_output.numpy()


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_embed_on_a_csv_of_pngs_equals_transformers_get_image_features(kind: str, csv_task: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from fairbench.cli import app
    from fairbench.data.task import load_task_card

    manifest, tasks = csv_task
    directory = _save(tmp_path / kind, kind)
    out = tmp_path / "emb.parquet"
    result = CliRunner().invoke(app, ["embed", "--model", "hf_clip", "--weights", f"local-dir:{directory}",
                                      "--task", "pngs", "--tasks-dir", str(tasks), "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    frame, meta = table.to_pandas(), json.loads(table.schema.metadata[b"fairbench"])
    # every row of the CSV, once, with its split, label and attributes as the CSV says
    with open(manifest, newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    classes = load_task_card(tasks / "pngs" / "pngs.yaml").classes
    assert sorted(classes) == ["abnormal", "normal"]
    assert sorted(frame["sample_id"]) == sorted(rows) and len(frame) == N_IMAGES
    for _, r in frame.iterrows():
        want = rows[r["sample_id"]]
        assert r["split"] == want["fold"] and r["attr_sex"] == want["sex"] and r["attr_site"] == want["site"]
        assert classes[int(r["label"])] == want["finding"]
    assert meta["model"]["architecture"]["model_type"] == kind
    # the embeddings: transformers' own processor + get_image_features on the same PNG files
    theirs = _reference(directory, kind, [manifest.parent / s for s in frame["sample_id"]])
    ours = np.stack(frame["image_embedding"].to_list())
    assert ours.shape == theirs.shape == (N_IMAGES, 16 if kind == "clip" else 32)
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(f"{kind}: max abs difference / max abs value = {rel:.3g}")
    assert rel <= 1e-4, rel
