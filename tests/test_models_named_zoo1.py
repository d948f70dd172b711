"""Named cards of issue 18 (zoo1): chexzero, against references built without fairbench's model code.

CheXzero's release is OpenAI's ``clip.model.CLIP`` state dict (``torch.save(model.state_dict())``); the reference
model is open_clip's ``build_model_from_openai_state_dict`` (OpenAI's architecture read from the state dict), the
reference pixels follow CheXzero's ``data_process.py: preprocess`` and ``zero_shot.py: make`` with PIL and
torchvision step for step, and the reference zero-shot is ``zero_shot.py: run_softmax_eval``'s formula in numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fairbench.models.base import get_model_card
from fairbench.models.build import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
TASK = "synth_zoo1"


def _upstream_pixels(img: np.ndarray, load: int, size: int) -> torch.Tensor:
    """CheXzero: cv2.imread gives RGB (grey repeated); preprocess(desired_size=load); HDF5 float; repeat to 3
    channels; Normalize(101.48761, 83.43944) on 0-255; Resize(size, BICUBIC) on the tensor (torchvision 0.11.3:
    no antialias for tensors)."""
    from PIL import Image
    from torchvision.transforms import Compose, InterpolationMode, Normalize, Resize

    rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
    pil = Image.fromarray(rgb)
    ratio = float(load) / max(pil.size)
    new_size = tuple([int(x * ratio) for x in pil.size])
    pil = pil.resize(new_size, Image.LANCZOS)  # Image.ANTIALIAS, removed in Pillow 10
    new = Image.new("L", (load, load))
    new.paste(pil, ((load - new_size[0]) // 2, (load - new_size[1]) // 2))
    arr = np.asarray(new).astype(np.float32)  # h5py dataset default dtype float32
    t = torch.from_numpy(np.repeat(np.expand_dims(arr, 0), 3, axis=0))
    tf = Compose([Normalize((101.48761,) * 3, (83.43944,) * 3),
                  Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=False)])
    return tf(t)


@pytest.mark.parametrize("shape", [(200, 300), (300, 200), (97, 61), (48, 48), (320, 256, 3), (700, 500)])
def test_chexzero_pixels_follow_upstream(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    for name, load, size in (("chexzero", 320, 224), ("tiny_chexzero", 48, 32)):
        card = get_model_card(name)
        ours = card.preprocessing([img])[0]
        ref = _upstream_pixels(img, load, size)
        assert ours.shape == ref.shape == (3, size, size)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


def test_chexzero_image_cache_geometry_is_a_fixed_point() -> None:
    from fairbench.models.preprocess import CacheGeometry

    card = get_model_card("chexzero")
    img = np.random.default_rng(1).integers(0, 256, size=(390, 512), dtype=np.uint8)
    geo = CacheGeometry(card.preprocessing)
    square = geo(img)
    assert square.shape == (320, 320) and geo.gray
    torch.testing.assert_close(card.preprocessing([square]), card.preprocessing([img]), rtol=0, atol=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CheXzero release: OpenAI CLIP's state dict saved with torch.save (run_train.py: save)."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(
        "ViT-B-32-quickgelu", pretrained=None, embed_dim=32,
        vision_cfg={"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 64},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2})
    path = tmp_path_factory.mktemp("chexzero") / "best_64_0.0001_original_17000_0.863.pt"
    torch.save(model.state_dict(), path)
    return path


def _reference_model(path: Path):  # type: ignore[no-untyped-def]
    from open_clip.model import build_model_from_openai_state_dict

    state = torch.load(path, map_location="cpu")
    model = build_model_from_openai_state_dict(dict(state), cast_dtype=torch.float32).float()
    model.load_state_dict(state)  # the builder rounds through float16 (OpenAI's own fp16 weights); reload in fp32
    return model.eval()


def test_chexzero_state_dict_loads_strictly_and_matches_openai_architecture(checkpoint: Path) -> None:
    import open_clip

    card = get_model_card("tiny_chexzero")
    loaded = build_model(card, str(checkpoint), CPU)
    ref = _reference_model(checkpoint)
    assert set(loaded.module.state_dict()) == set(torch.load(checkpoint, map_location="cpu"))
    imgs = [np.random.default_rng(i).integers(0, 256, size=(60 + 7 * i, 45), dtype=np.uint8) for i in range(3)]
    x = torch.stack([_upstream_pixels(a, 48, 32) for a in imgs])
    tokens = open_clip.tokenize(["pleural effusion", "no pleural effusion"])
    with torch.no_grad():
        ours_i, ref_i = loaded.encode_image(loaded.preprocess(imgs)), ref.encode_image(x)
        torch.testing.assert_close(ours_i, ref_i, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded.encode_text(loaded.tokenize(["pleural effusion", "no pleural effusion"])),
                                   ref.encode_text(tokens), rtol=1e-5, atol=1e-5)
    # the full-size card refuses the toy file with one line (strict load: names and shapes)
    from fairbench.errors import WeightsError

    with pytest.raises(WeightsError, match="best_64_0.0001_original_17000_0.863.pt"):
        build_model(get_model_card("chexzero"), str(checkpoint), CPU)


@pytest.fixture(scope="module")
def tasks_dir(micro_task_dir) -> Path:  # type: ignore[no-untyped-def]
    return micro_task_dir(TASK)


def _nf_tasks_dir(tasks_dir: Path, tmp_path: Path) -> Path:
    """The micro task with ``evaluation.no_finding_class: normal``."""
    src = (tasks_dir / TASK / f"{TASK}.yaml").read_text()
    (tmp_path / "tasks" / "synth_zoo1nf").mkdir(parents=True)
    text = src.replace(f"name: {TASK}", "name: synth_zoo1nf").replace("evaluation:\n",
                                                                        "evaluation:\n  no_finding_class: normal\n")
    (tmp_path / "tasks" / "synth_zoo1nf" / "synth_zoo1nf.yaml").write_text(text)
    return tmp_path / "tasks"


@pytest.mark.parametrize("no_finding", [False, True])
def test_chexzero_zero_shot_is_the_released_pair_softmax(checkpoint: Path, tasks_dir: Path, tmp_path: Path,
                                                         no_finding: bool) -> None:
    import open_clip

    from fairbench.data.task import get_task
    from fairbench.pipeline import RunConfig, run_cell

    tdir, name = (_nf_tasks_dir(tasks_dir, tmp_path), "synth_zoo1nf") if no_finding else (tasks_dir, TASK)
    result = run_cell(RunConfig(task=name, model="tiny_chexzero", adapt="zeroshot", weights=str(checkpoint),
                                n_boot=0, out=tmp_path / "out", tasks_dirs=(tdir,), device="cpu"))
    doc = json.loads((result.path / "metrics.json").read_text())
    fitted = doc["adapt"]["fitted"]["zeroshot"]
    assert fitted["pair_template"] == ["{}", "no {}"] and fitted["rule"] == "pos_neg_softmax"

    task = get_task(name, (tdir,))
    samples = task.load_split("test", None)
    imgs = samples.images.load(np.arange(len(samples)))
    ref = _reference_model(checkpoint)
    with torch.no_grad():
        feats = ref.encode_image(torch.stack([_upstream_pixels(a, 48, 32) for a in imgs]))
        feats = (feats / feats.norm(dim=-1, keepdim=True)).numpy()

        def weights(template: str, c: str) -> np.ndarray:  # zero_shot.py: zeroshot_classifier over the names
            e = ref.encode_text(open_clip.tokenize([template.format(n) for n in task.prompts.classnames[c]]))
            e = e / e.norm(dim=-1, keepdim=True)
            e = e.mean(dim=0)
            return (e / e.norm()).numpy()

        p = {}
        for c in task.classes:
            pos, neg = feats @ weights("{}", c), feats @ weights("no {}", c)
            p[c] = np.exp(pos) / (np.exp(pos) + np.exp(neg))
    if no_finding:
        expected = np.stack([1 - p["abnormal"], p["abnormal"]], axis=1)
        assert fitted["classes_scored"] == ["abnormal"]
    else:
        both = np.stack([p["normal"], p["abnormal"]], axis=1)
        expected = both / both.sum(axis=1, keepdims=True)
        assert fitted["classes_scored"] == ["normal", "abnormal"]
    frame = pd.read_parquet(result.path / "predictions.parquet")
    test = frame[frame["split"] == "test"].set_index("sample_id").loc[samples.sample_ids.astype(str)]
    np.testing.assert_allclose(test[["prob_normal", "prob_abnormal"]].to_numpy(), expected, atol=1e-5)
