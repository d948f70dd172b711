"""Faithfulness gaps in named cards (issue 18 item 2, second pass): MedSigLIP's square padding, MONET's concept
score, FLAIR's fundus crop, QuiltNet's activation. References are the upstream classes (transformers,
open_clip) or the upstream recipe written out here from the released code, never fairbench's helpers or the
cards' values."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from test_models_generic import _tokenizer as _clip_tokenizer  # the one tiny CLIP tokenizer of the hf tests

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HALF = [0.5, 0.5, 0.5]
# google/medsiglip-448's preprocessor_config.json as the public mirror fokan/MedSigLIP@4522ddc holds it
MEDSIGLIP_PRE = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": HALF,
                 "image_processor_type": "SiglipImageProcessor", "image_std": HALF,
                 "processor_class": "SiglipProcessor", "resample": 3, "rescale_factor": 0.00392156862,
                 "size": {"height": 448, "width": 448}}


def _build(name: str, directory: Path):  # type: ignore[no-untyped-def]
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model, resolve_model_card

    card = resolve_model_card(get_model_card(name), f"local-dir:{directory}")
    return build_model(card, f"local-dir:{directory}", torch.device("cpu"))


# -- MedSigLIP: zero padding to a centred square before SiglipImageProcessor ---------------------------------
@pytest.fixture(scope="module")
def medsiglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SiglipModel at the release's 448 px and patch 14 (toy widths), saved with save_pretrained beside the hub's
    preprocessor_config.json values (a CLIP BPE tokenizer stands in for spiece.model: only images are tested)."""
    from transformers import SiglipConfig, SiglipModel

    directory = tmp_path_factory.mktemp("medsiglip")
    tok, n_vocab = _clip_tokenizer()
    tok.save_pretrained(directory)
    torch.manual_seed(0)
    text = {"vocab_size": n_vocab, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    vision = {"image_size": 448, "patch_size": 14, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2}
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(MEDSIGLIP_PRE))
    return directory


def _inputs() -> list[np.ndarray]:
    """Non-square (both orientations, odd differences) and square inputs, RGB and grayscale (HxWx1), noise and
    smooth."""
    rng = np.random.default_rng(1)
    out = []
    for h, w, c in [(300, 200, 3), (150, 401, 1), (97, 531, 3), (613, 480, 1), (448, 448, 3), (1000, 701, 3)]:
        if c == 3 and h % 2 == 0:
            img = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        else:
            y, x = np.mgrid[0:h, 0:w]
            base = 127 + 100 * np.sin(x / (w / 5.0)) * np.cos(y / (h / 4.0))
            img = np.stack([base + 30 * k for k in range(c)], -1).clip(0, 255).astype(np.uint8)
        out.append(img)
    return out


def _medsiglip_serving_pixels(img: np.ndarray) -> torch.Tensor:
    """Google-Health/medsiglip python/serving/predictor.py, written out: scale to [0, 1], a single channel
    repeated to three, zero padding to a square (the shorter side padded by d // 2 before and d - d // 2 after),
    then SiglipImageProcessor(do_rescale=False, size 448x448) with its class defaults (bicubic, mean = std =
    0.5); the PIL processor, which was transformers' SiglipImageProcessor when that code was written."""
    from transformers import SiglipImageProcessorPil

    x = img.astype(np.float32) / float(np.iinfo(img.dtype).max)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = np.concatenate([x, x, x], axis=-1)
    h, w = x.shape[:2]
    if h < w:
        d = w - h
        x = np.pad(x, ((d // 2, d - d // 2), (0, 0), (0, 0)))
    elif w < h:
        d = h - w
        x = np.pad(x, ((0, 0), (d // 2, d - d // 2), (0, 0)))
    proc = SiglipImageProcessorPil(do_rescale=False, size={"height": 448, "width": 448})
    return proc.preprocess([x], data_format="channels_first", input_data_format="channels_last",
                           return_tensors="pt")["pixel_values"][0]


def test_medsiglip_pads_to_a_square_as_the_released_serving_code(medsiglip_dir: Path) -> None:
    from transformers import SiglipModel

    from fairbench.models.preprocess import CacheGeometry

    model = _build("medsiglip", medsiglip_dir)
    images = _inputs()
    want = torch.stack([_medsiglip_serving_pixels(a) for a in images])
    ours = model.preprocess(images)
    assert ours.shape == want.shape == (len(images), 3, 448, 448)
    grey = (ours - want).abs().max().item() * 0.5 * 255  # in grey levels (std 0.5)
    print(f"medsiglip pixels vs the serving code's pad + SiglipImageProcessor: max {grey:.3g} grey levels")
    assert grey <= 1e-3, grey
    # through the image cache: the padded, resized uint8 square the cache stores gives the same pixels
    geometry = CacheGeometry(model.card.preprocessing)
    cached = model.preprocess([geometry(a) for a in images])
    assert (cached - want).abs().max().item() * 0.5 * 255 <= 1e-3
    # the embedding is SiglipModel's own get_image_features on those pixels
    ref = SiglipModel.from_pretrained(str(medsiglip_dir)).eval()
    with torch.no_grad():
        theirs = ref.get_image_features(pixel_values=want).pooler_output
        emb = model.image_outputs(ours)["embedding"]
    assert ((emb - theirs).abs().max() / theirs.abs().max()).item() <= 1e-5
    # the check has teeth: the unpadded (squashed) resize moves non-square images by far more
    from PIL import Image
    from transformers import SiglipImageProcessorPil

    squashed = SiglipImageProcessorPil(size={"height": 448, "width": 448})(
        images=[Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).convert("RGB") for a in images[:1]],
        return_tensors="pt")["pixel_values"]
    assert (squashed - want[:1]).abs().max().item() * 0.5 * 255 > 50


# -- FLAIR: the fundus field-of-view crop of its zero-shot and transfer runs -------------------------------
def _fundus(h: int, w: int, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """A bright disk (the field of view) off-centre on a dark, noisy background, plus a small bright blob
    elsewhere (a second component the crop must ignore)."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w, rng.uniform(0.25, 0.4) * min(h, w)
    img = rng.integers(0, 14, (h, w, 3)).astype(np.int64)
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img[disk] += np.array([150, 70, 30]) + rng.integers(0, 60, (int(disk.sum()), 3))
    img[1:4, 1:4] += 200
    img = img.clip(0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


def _blobs(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian blobs of several heights, placed independently in each channel: which blobs are
    foreground, and so the bounding box, depends on the threshold and on the channel thresholded."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(6):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.2) * min(h, w)
            out[..., c] += rng.uniform(40, 200) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out.clip(0, 255).astype(np.uint8)


def _flair_upstream(img: np.ndarray, size: int) -> torch.Tensor:
    """jusiro/FLAIR@d6652d5 flair/pretraining/data/transforms.py written out: LoadImage(crop_foreground=True)
    (RGB float, / 255 when the maximum exceeds 1, channels first; crop_im: skimage threshold_li of the red
    channel, getLargestCC by label + bincount, regionprops' bounding box) and ImageScaling(canvas=True) with
    torchvision's Resize."""
    from PIL import Image
    from skimage.filters import threshold_li
    from skimage.measure import label, regionprops
    from torchvision.transforms import Resize

    x = np.array(Image.fromarray(img).convert("RGB"), dtype=float)
    if np.max(x) > 1:
        x /= 255
    x = np.transpose(x, (2, 0, 1))
    binary = x[0] > threshold_li(x[0])
    labels = label(binary)
    largest = labels == np.argmax(np.bincount(labels.flat, weights=binary.flat))
    regions = regionprops(label(largest))
    fov = regions[int(np.argmax([r.area for r in regions]))]
    t = torch.tensor(x[:, fov.bbox[0]:fov.bbox[2], fov.bbox[1]:fov.bbox[3]])
    if t.shape[-1] == t.shape[-2]:
        return Resize((size, size))(t).float()
    scale = max(t.shape[-2:]) / size
    t = Resize((int(t.shape[-2] / scale), int(t.shape[-1] / scale)))(t)
    return torch.nn.functional.pad(t, (0, size - t.shape[-1], 0, size - t.shape[-2], 0, 0)).float()


def test_flair_crops_the_field_of_view_as_upstream(micro_task_dir) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("skimage")
    from fairbench.models.base import get_model_card
    from fairbench.models.preprocess import CacheGeometry

    pre = get_model_card("flair").preprocessing
    assert (pre.image_size, pre.resize) == (512, "fov_canvas")
    rng = np.random.default_rng(7)
    images = [_fundus(h, w, rng, c) for h, w, c in [(300, 420, 3), (411, 297, 3), (256, 256, 1), (180, 181, 3),
                                                     (640, 480, 1), (97, 530, 3)]]
    images.append(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))  # noise: whatever component is largest
    images += [_blobs(h, w, rng) for h, w in [(200, 260), (333, 250), (150, 150), (240, 400)]]
    # two squares touching only at a corner (one component with 8-connectivity, 1300 px) and a third square
    # (1225 px): skimage's label joins diagonal neighbours, so the crop is the first two squares' bounding box
    corner = np.full((120, 150, 3), 5, dtype=np.uint8)
    corner[10:40, 10:40], corner[40:60, 40:60], corner[70:105, 100:135] = 200, 180, 220
    images.append(corner)
    want = torch.stack([_flair_upstream(a, 512) for a in images])
    ours = pre(images)
    diff = float((ours - want).abs().max())
    print(f"flair fov_canvas vs upstream LoadImage(crop_foreground=True) + ImageScaling: max {diff * 255:.3g} grey levels")
    assert diff <= 1e-6, diff
    # a cached canvas cropped again would not be the same image: runs serve FLAIR full images instead
    assert not CacheGeometry(pre).cacheable and CacheGeometry(get_model_card("tiny_flair").preprocessing).cacheable
    # the crop matters: without it the canvas differs by far more on these images
    import dataclasses

    uncropped = dataclasses.replace(pre, resize="canvas")(images[:1])
    assert float((uncropped - want[:1]).abs().max()) > 0.2
    from fairbench.data.task import get_task
    from fairbench.pipeline import RunConfig, prepared_loader

    task = get_task("synth_zoo_flair", (micro_task_dir("synth_zoo_flair"),))
    cfg = RunConfig(task="synth_zoo_flair", model="flair", adapt="zeroshot", device="cpu")
    assert prepared_loader(cfg, task, get_model_card("flair")).image_cache is None
    assert prepared_loader(cfg, task, get_model_card("tiny_flair")).image_cache == "auto"


# -- MONET: its concept presence score -----------------------------------------------------------------------
# suinleelab/MONET@3ae0a64 tutorial/automatic_concept_annotation.ipynb (get_prompt_embedding's defaults and
# calculate_concept_presence_score's temperature), written out here
MONET_TEMPLATES = ["This is skin image of {}", "This is dermatology image of {}", "This is image of {}"]
MONET_REFS = [["This is skin image"], ["This is dermatology image"], ["This is image"]]
MONET_TEMP = 1 / np.exp(4.5944)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def monet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CLIPModel as suinleelab/monet's config.json names it (ViT-L/14 layout at toy widths: patch 14, 224 px, 77
    text positions, eos_token_id 2) with the hub's preprocessor_config.json values (after commit b08d088)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    directory = tmp_path_factory.mktemp("monet")
    vocab: dict[str, int] = {}
    for c in string.ascii_lowercase + string.digits + ".,-'()/":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    # the special tokens last, as in CLIP's vocabulary: with the old config's eos_token_id 2, transformers pools
    # the text at the argmax of the ids, which is then the end-of-text token (as for the real checkpoint)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    torch.manual_seed(2)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": len(vocab) - 2,
            "eos_token_id": 2, "pad_token_id": len(vocab) - 1}
    vision = {"image_size": 224, "patch_size": 14, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
         "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
         "resample": 3, "size": 224}))
    return directory


def _monet_reference(directory: Path, pixels: torch.Tensor, terms: list[str]) -> np.ndarray:
    """The tutorial's get_prompt_embedding + calculate_concept_presence_score with transformers' CLIPModel as
    the encoder (get_text_features / get_image_features, as the tutorial's model_hf path) and scipy's softmax."""
    import scipy.special
    from transformers import AutoTokenizer, CLIPModel

    model, tok = CLIPModel.from_pretrained(str(directory)).eval(), AutoTokenizer.from_pretrained(str(directory))

    def text(prompts: list[str]) -> torch.Tensor:
        ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        return model.get_text_features(**ids).pooler_output

    with torch.no_grad():
        target = torch.stack([text([t.format(term) for term in terms]) for t in MONET_TEMPLATES])
        target = target / target.norm(dim=2, keepdim=True)
        ref = torch.stack([text(r) for r in MONET_REFS])
        ref = ref / ref.norm(dim=2, keepdim=True)
        img = model.get_image_features(pixel_values=pixels).pooler_output
        img = img / img.norm(dim=1, keepdim=True)
    target_mean = (target.float() @ img.T.float()).mean(dim=[1])
    ref_mean = (ref.float() @ img.T.float()).mean(axis=1)
    return scipy.special.softmax([target_mean.numpy() / MONET_TEMP, ref_mean.numpy() / MONET_TEMP], axis=0)[0, :].mean(axis=0)


def test_monet_zero_shot_is_its_concept_presence_score(monet_dir: Path, micro_task_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd
    from PIL import Image
    from transformers import AutoImageProcessor

    from fairbench.data.task import get_task
    from fairbench.pipeline import RunConfig, run_cell

    name = "synth_zoo_monet"
    tasks_dir = micro_task_dir(name, (8, 8, 12))
    result = run_cell(RunConfig(task=name, model="monet", adapt="zeroshot", weights=f"local-dir:{monet_dir}",
                                n_boot=0, out=tmp_path, tasks_dirs=(tasks_dir,), device="cpu"))
    task = get_task(name, (tasks_dir,))
    assert task.evaluation.no_finding_class == "normal"
    samples = task.load_split("test", None)
    images = samples.images.load(np.arange(len(samples)))
    proc = AutoImageProcessor.from_pretrained(str(monet_dir))
    pixels = proc(images=[Image.fromarray(a).convert("RGB") for a in images], return_tensors="pt")["pixel_values"]
    score = _monet_reference(monet_dir, pixels, list(task.prompts.classnames["abnormal"]))
    frame = pd.read_parquet(result.path / "predictions.parquet")
    test = frame[frame["split"] == "test"].set_index("sample_id").loc[samples.sample_ids.astype(str)]
    got = test["prob_abnormal"].to_numpy()
    diff = float(np.abs(got - score).max())
    print(f"monet P(abnormal) vs the tutorial's concept presence score: max {diff:.3g} (scores {score.min():.3f}"
          f"-{score.max():.3f})")
    assert diff <= 1e-5, diff
    np.testing.assert_allclose(test["prob_normal"].to_numpy(), 1 - score, atol=1e-5)
    assert result.metrics["adapt"]["fitted"]["zeroshot"]["rule"] == "monet_concept"


def test_monet_concept_score_over_several_classes(monet_dir: Path) -> None:
    """No no-finding class: every class is a concept; P(c) = score_c / sum_k score_k."""
    from types import SimpleNamespace

    from PIL import Image
    from transformers import AutoImageProcessor

    model = _build("monet", monet_dir)
    names = {"melanoma": ["melanoma"], "nevus": ["nevus", "mole"], "bullae": ["bullae", "blister"]}
    task = SimpleNamespace(classes=tuple(names), prompts=SimpleNamespace(classnames=names), path="t.yaml",
                           evaluation=SimpleNamespace(no_finding_class=None))
    head = model.zeroshot_head(task)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (260, 230, 3), dtype=np.uint8) for _ in range(5)]
    pixels = AutoImageProcessor.from_pretrained(str(monet_dir))(
        images=[Image.fromarray(a) for a in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = torch.softmax(head.score(model.image_outputs(model.preprocess(images))), dim=1).numpy()
    scores = np.stack([_monet_reference(monet_dir, pixels, terms) for terms in names.values()], axis=1)
    np.testing.assert_allclose(probs, scores / scores.sum(1, keepdims=True), atol=1e-5)
