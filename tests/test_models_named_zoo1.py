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


def _nf_tasks_dir(tasks_dir: Path, tmp_path: Path, no_finding: bool) -> Path:
    """The micro task with ``evaluation.no_finding_class: normal`` (or without one: synth_cxr's card names it)."""
    import yaml

    from fairbench.cards import read_yaml_with_includes

    card = read_yaml_with_includes(tasks_dir / TASK / f"{TASK}.yaml")
    name = "synth_zoo1nf" if no_finding else "synth_zoo1plain"  # one folder per name: a name is defined once
    card["name"] = name
    card.setdefault("evaluation", {}).pop("no_finding_class", None)
    if no_finding:
        card["evaluation"]["no_finding_class"] = "normal"
    (tmp_path / "tasks" / name).mkdir(parents=True)
    (tmp_path / "tasks" / name / f"{name}.yaml").write_text(yaml.safe_dump(card))
    return tmp_path / "tasks"


@pytest.mark.parametrize("no_finding", [False, True])
def test_chexzero_zero_shot_is_the_released_pair_softmax(checkpoint: Path, tasks_dir: Path, tmp_path: Path,
                                                         no_finding: bool) -> None:
    import open_clip

    from fairbench.data.task import get_task
    from fairbench.pipeline import RunConfig, run_cell

    tdir, name = _nf_tasks_dir(tasks_dir, tmp_path, no_finding), ("synth_zoo1nf" if no_finding else "synth_zoo1plain")
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


# -- pubmedclip, plip (transformers CLIPModel directories) and quiltnet (open_clip hub layout) ---------------------
#: the legacy preprocessor_config.json both hub repositories carry (CLIPFeatureExtractor, integer sizes)
LEGACY_CLIP_PROCESSOR = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                         "feature_extractor_type": "CLIPFeatureExtractor",
                         "image_mean": [0.48145466, 0.4578275, 0.40821073],
                         "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}


def _hub_snapshot(root: Path, repo: str, rev: str = "0123abcd") -> Path:
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / rev
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text(rev)
    return snap


def _save_clip_model(directory: Path) -> None:
    """A CLIPModel at ViT-B/32 geometry (224 px, patch 32) with toy widths: the release's key names."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,-'()/&":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    vision = {"image_size": 224, "patch_size": 32, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(directory)
    tok.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(LEGACY_CLIP_PROCESSOR))


@pytest.mark.parametrize(("name", "repo"), [("pubmedclip", "flaviagiammarino/pubmed-clip-vit-base-patch32"),
                                            ("plip", "vinid/plip")])
def test_hf_clip_named_cards_load_their_hub_repository(name: str, repo: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    from fairbench.models.build import resolve_model_card

    snap = _hub_snapshot(tmp_path / "hub", repo)
    _save_clip_model(snap)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    card = resolve_model_card(get_model_card(name), None, {})
    assert card.weights_source == f"hf-hub:{repo}"
    pre = card.preprocessing
    assert (pre.image_size, pre.resize, pre.interpolation) == (224, "shortest", "bicubic")
    assert pre.mean == tuple(LEGACY_CLIP_PROCESSOR["image_mean"])
    assert pre.std == tuple(LEGACY_CLIP_PROCESSOR["image_std"])
    model = build_model(card, None, CPU)
    assert model.weights_info["revision"] == "0123abcd"
    ref, proc = AutoModel.from_pretrained(str(snap)).eval(), AutoProcessor.from_pretrained(str(snap))
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(300, 200), (180, 260, 3), (224, 224), (97, 400)]]
    pix = proc(images=[Image.fromarray(a).convert("RGB") for a in imgs], return_tensors="pt")["pixel_values"]
    ours = model.preprocess(imgs)
    torch.testing.assert_close(ours, pix, rtol=0, atol=1e-5)
    texts = ["pleural effusion", "an h&e image patch of tumor."]
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(ours), ref.get_image_features(pixel_values=pix).pooler_output,
                                   rtol=1e-5, atol=1e-6)
        t = proc.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        torch.testing.assert_close(model.encode_text(model.tokenize(texts)),
                                   ref.get_text_features(**t).pooler_output, rtol=1e-5, atol=1e-6)


#: QuiltNet-B-32's open_clip_config.json as the hub commit 88c3e9f ("Add model") shows it: open_clip's plain
#: ViT-B-32 config (no "quick_gelu") with an OpenAI mean/std preprocess_cfg, 469 bytes as written with indent 2
QUILT_CONFIG = {"model_cfg": {"embed_dim": 512,
                              "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
                              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                                           "layers": 12}},
                "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                   "std": [0.26862954, 0.26130258, 0.27577711]}}


@pytest.mark.slow  # the real ViT-B-32 twice: about 1 minute and 2.7 GB
def test_quiltnet_card_matches_open_clips_hub_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ViT-B-32 size (random weights): open_clip.create_model_and_transforms('hf-hub:...') on the same
    directory (offline, from the local cache) is the reference for the weights, the forward and the pixels."""
    import huggingface_hub.constants as hc
    import open_clip
    from PIL import Image

    assert len(json.dumps(QUILT_CONFIG, indent=2)) == 469
    repo = "wisdomik/QuiltNet-B-32"
    snap = _hub_snapshot(tmp_path / "hub", repo)
    (snap / "open_clip_config.json").write_text(json.dumps(QUILT_CONFIG, indent=2))
    torch.manual_seed(0)
    src = open_clip.create_model("ViT-B-32", pretrained=None)
    torch.save(src.state_dict(), snap / "open_clip_pytorch_model.bin")
    del src
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref, _, transform = open_clip.create_model_and_transforms(f"hf-hub:{repo}", cache_dir=str(tmp_path / "hub"))
    ref.eval()
    model = build_model(get_model_card("quiltnet"), None, CPU)
    assert model.weights_info["source"] == f"hf-hub:{repo}"
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(300, 200, 3), (180, 260), (97, 400, 3)]]
    pix = torch.stack([transform(Image.fromarray(a)) for a in imgs])
    ours = model.preprocess(imgs)
    torch.testing.assert_close(ours, pix, rtol=0, atol=1e-5)
    tokens = open_clip.get_tokenizer(f"hf-hub:{repo}", cache_dir=str(tmp_path / "hub"))(["tumor", "normal tissue"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(pix), ref.encode_image(pix), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.encode_text(model.tokenize(["tumor", "normal tissue"])),
                                   ref.encode_text(tokens), rtol=1e-5, atol=1e-6)
