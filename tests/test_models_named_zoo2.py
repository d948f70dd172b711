"""Named cards over the generic hf_clip family (issue 18 item 2): ``siglip_b16``, ``medsiglip``, ``monet``.

Each release's checkpoint layout is built with the transformers class its hub ``config.json`` names
(``SiglipModel``, ``CLIPModel``) at toy widths but the release's image size, patch size and text length, saved as
the hub repository holds it (``save_pretrained``: ``config.json`` + ``model.safetensors``, the release's tokenizer
files, and the hub's ``preprocessor_config.json`` written out with the values the hub file holds), then loaded
through fairbench's card. References are transformers' own calls and processors and an independent PIL
computation of the released preprocessing, never fairbench's code or the cards' values.
"""

from __future__ import annotations

import io
import json
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "synth_named_zoo2"
HALF = [0.5, 0.5, 0.5]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# the hub repositories' preprocessor_config.json as they hold them (values read from the hub file pages:
# google/siglip-base-patch16-224@78005bd; google/medsiglip-448 via its mirror fokan/MedSigLIP@4522ddc, the gated
# original was not read; suinleelab/monet after commit b08d088, which changed the mean/std from OpenAI's to
# ImageNet's on an otherwise unchanged CLIPFeatureExtractor file, d9a6e44)
SIGLIP_PRE = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": HALF,
              "image_processor_type": "SiglipImageProcessor", "image_std": HALF, "processor_class": "SiglipProcessor",
              "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224}}
MEDSIGLIP_PRE = {**SIGLIP_PRE, "rescale_factor": 0.00392156862, "size": {"height": 448, "width": 448}}
MONET_PRE = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
             "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": IMAGENET_MEAN,
             "image_std": IMAGENET_STD, "resample": 3, "size": 224}

CORPUS = ["this is a photo of a normal chest x-ray", "this is a photo of an abnormal chest x-ray",
          "pleural effusion cardiomegaly pneumonia atelectasis edema", "no finding in the lungs",
          "this is skin image of a lesion with bullae or blister", "dermatology image"] * 20


def _spiece(path: Path) -> None:
    """A tiny SentencePiece unigram model (the kind of file SiglipTokenizer reads as spiece.model)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=64,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    path.write_bytes(buf.getvalue())


def _siglip_dir(directory: Path, image_size: int, patch: int, pre: dict) -> Path:
    """SiglipModel at the release's image size, patch size and 64 text positions; toy widths."""
    from transformers import SiglipConfig, SiglipModel, SiglipTokenizer

    directory.mkdir(parents=True)
    _spiece(directory / "spiece.model")
    tok = SiglipTokenizer(vocab_file=str(directory / "spiece.model"), model_max_length=64)
    tok.save_pretrained(directory)
    torch.manual_seed(0)
    text = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 64, "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id}
    vision = {"image_size": image_size, "patch_size": patch, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2}
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():  # released values are far from 0: a head that forgot either is caught
        model.logit_bias.fill_(-10.0)
        model.logit_scale.fill_(float(np.log(10.0)))
    model.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(pre))
    return directory


def _monet_dir(directory: Path) -> Path:
    """CLIPModel as suinleelab/monet's config.json names it (ViT-L/14 layout: patch 14, 224 px, 77 text
    positions, an old config whose eos_token_id is 2) at toy widths, CLIP BPE tokenizer files."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    directory.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,-'()/":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    torch.manual_seed(1)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2,
            "pad_token_id": 1}
    vision = {"image_size": 224, "patch_size": 14, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(MONET_PRE))
    return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("named")
    return {"siglip_b16": _siglip_dir(root / "siglip_b16", 224, 16, SIGLIP_PRE),
            "medsiglip": _siglip_dir(root / "medsiglip", 448, 14, MEDSIGLIP_PRE),
            "monet": _monet_dir(root / "monet")}


@pytest.fixture(scope="module")
def tasks_dir(micro_task_dir) -> Path:  # type: ignore[no-untyped-def]
    return micro_task_dir(TASK, (16, 12, 12))


def _build(name: str, directory: Path):  # type: ignore[no-untyped-def]
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model, resolve_model_card

    card = resolve_model_card(get_model_card(name), f"local-dir:{directory}")
    return build_model(card, f"local-dir:{directory}", torch.device("cpu"))


def _images() -> list[np.ndarray]:
    """Non-square RGB and grayscale inputs of several sizes, smooth enough that resampling filters agree."""
    rng = np.random.default_rng(0)
    out = []
    for h, w, c in [(300, 200, 3), (150, 400, 1), (224, 224, 3), (97, 531, 3), (613, 480, 1)]:
        y, x = np.mgrid[0:h, 0:w]
        base = 127 + 100 * np.sin(x / (w / 3.0) + rng.uniform(0, 3)) * np.cos(y / (h / 2.0))
        img = np.stack([base + 20 * k for k in range(c)], -1).clip(0, 255).astype(np.uint8)
        out.append(img[..., 0] if c == 1 else img)
    return out


def _released_pixels(img: np.ndarray, side: int, mean: list[float], std: list[float], crop: bool) -> np.ndarray:
    """The released pipelines with PIL and numpy only: SigLIP resizes straight to side x side (bicubic);
    MONET (torchvision Resize(224, BICUBIC) + CenterCrop(224)) resizes the shorter side, then crops the centre."""
    from PIL import Image

    pil = Image.fromarray(img).convert("RGB")
    if crop:
        w, h = pil.size
        s = side / min(w, h)
        nw, nh = (side, round(h * s)) if w <= h else (round(w * s), side)
        pil = pil.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = round((nw - side) / 2.0), round((nh - side) / 2.0)
        pil = pil.crop((left, top, left + side, top + side))
    else:
        pil = pil.resize((side, side), Image.Resampling.BICUBIC)
    arr = np.asarray(pil, dtype=np.float64) / 255.0
    return ((arr - np.array(mean)) / np.array(std)).transpose(2, 0, 1)


# -- the cards ----------------------------------------------------------------------------------------------
def test_cards_state_the_releases() -> None:
    """Sources, and the preprocessing each release's processor applies (transformers' SiglipImageProcessor
    class defaults are SigLIP's released values: 224x224 squash, bicubic, mean = std = 0.5)."""
    from transformers import SiglipImageProcessor

    from fairbench.models.base import get_model_card

    defaults = SiglipImageProcessor()
    sig, med, monet = (get_model_card(n) for n in ("siglip_b16", "medsiglip", "monet"))
    assert sig.weights_source == "hf-hub:google/siglip-base-patch16-224"
    assert med.weights_source == "hf-hub:google/medsiglip-448"
    assert monet.weights_source == "hf-hub:suinleelab/monet"
    assert defaults.size == {"height": 224, "width": 224} and int(defaults.resample) == 3
    for card, side, resize in ((sig, 224, "square"), (med, 448, "center_pad_square")):  # medsiglip: zero pad first
        p = card.preprocessing
        assert (p.image_size, p.resize, p.interpolation) == (side, resize, "bicubic")
        assert list(p.mean) == list(defaults.image_mean) and list(p.std) == list(defaults.image_std)
    p = monet.preprocessing
    assert (p.image_size, p.resize, p.interpolation) == (224, "shortest", "bicubic")
    assert list(p.mean) == IMAGENET_MEAN and list(p.std) == IMAGENET_STD


# -- tokenisation: SigLIP pads to 64 -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["siglip_b16", "medsiglip"])
def test_siglip_text_is_padded_to_64_as_trained(name: str, dirs: dict[str, Path]) -> None:
    """SigLIP's text embedding is the hidden state at the LAST position, and it was trained on texts padded to
    64 with padding="max_length" (transformers' SigLIP docs): the ids and embeddings must be those."""
    from transformers import AutoModel, SiglipTokenizer

    d = dirs[name]
    model = _build(name, d)
    prompts = ["This is a photo of Pleural Effusion.", "no finding", "a photo of an abnormal chest x-ray"]
    ref_tok = SiglipTokenizer.from_pretrained(str(d))
    want = ref_tok(prompts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")["input_ids"]
    ours = model.tokenize(prompts)
    assert ours["input_ids"].shape == (3, 64)
    assert torch.equal(ours["input_ids"], want)
    # SiglipTokenizer lower-cases and strips punctuation (how SigLIP's text was canonicalised)
    assert torch.equal(model.tokenize(["this is a photo of pleural effusion"])["input_ids"][0], want[0])
    ref = AutoModel.from_pretrained(str(d)).eval()
    with torch.no_grad():
        emb = model.encode_text(ours)
        theirs = ref.get_text_features(input_ids=want).pooler_output
        torch.testing.assert_close(emb, theirs, rtol=1e-5, atol=1e-6)
        # the check has teeth: padding to the longest prompt gives other embeddings
        short = ref_tok(prompts, padding=True, return_tensors="pt")["input_ids"]
        assert short.shape[1] < 64
        assert (ref.get_text_features(input_ids=short).pooler_output - theirs).abs().max() > 1e-3


# -- pixels and image embeddings -----------------------------------------------------------------------------
# medsiglip pads to a square before its processor (the release's serving code): tests/test_models_named_zoo.py
@pytest.mark.parametrize("name", ["siglip_b16", "monet"])
def test_pixels_and_embeddings_match_upstream(name: str, dirs: dict[str, Path]) -> None:
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    d = dirs[name]
    model = _build(name, d)
    images = _images()
    pixels = model.preprocess(images)
    # the release's own processor (as the hub directory configures it), on RGB PIL images
    proc = AutoImageProcessor.from_pretrained(str(d))
    theirs = proc(images=[Image.fromarray(a).convert("RGB") for a in images], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, theirs, rtol=0, atol=0)
    # and the released pipeline written out with PIL: size, crop, mean and std as released
    side = {"siglip_b16": 224, "medsiglip": 448, "monet": 224}[name]
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if name == "monet" else (HALF, HALF)
    ref = np.stack([_released_pixels(a, side, mean, std, crop=name == "monet") for a in images])
    assert pixels.shape == (len(images), 3, side, side)
    grey = np.abs(pixels.numpy() - ref) * np.array(std)[None, :, None, None] * 255  # in 0-255 grey levels
    assert grey.max() <= 2.0 + 1e-4 and grey.mean() < 0.01, (grey.mean(), grey.max())
    upstream = AutoModel.from_pretrained(str(d)).eval()
    with torch.no_grad():
        ours = model.image_outputs(pixels)["embedding"]
        want = upstream.get_image_features(pixel_values=pixels).pooler_output
    assert ((ours - want).abs().max() / want.abs().max()).item() <= 1e-5


# -- zero-shot: the models' own heads ------------------------------------------------------------------------
# monet's zero-shot is MONET's concept presence score: tests/test_models_named_zoo.py
@pytest.mark.parametrize("name", ["siglip_b16", "medsiglip"])
def test_zero_shot_is_the_models_own_head(name: str, dirs: dict[str, Path], tasks_dir: Path,
                                          tmp_path: Path) -> None:
    """Per-sample probabilities equal transformers' forward: SigLIP sigmoid(logits_per_image) (logit_bias
    included) normalised over the classes, CLIP softmax(logits_per_image); prompts of a class averaged as CLIP
    does (mean of normalised embeddings)."""
    import pandas as pd
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from fairbench.data.task import get_task
    from fairbench.pipeline import RunConfig, run_cell

    d = dirs[name]
    result = run_cell(RunConfig(task=TASK, model=name, adapt="zeroshot", weights=f"local-dir:{d}", n_boot=0,
                                out=tmp_path, tasks_dirs=(tasks_dir,), device="cpu"))
    fitted = result.metrics["adapt"]["fitted"]
    task = get_task(TASK, (tasks_dir,))
    samples = task.load_split("test", None)
    images = samples.images.load(np.arange(len(samples)))
    model, tok = AutoModel.from_pretrained(str(d)).eval(), AutoTokenizer.from_pretrained(str(d))
    proc = AutoImageProcessor.from_pretrained(str(d))
    pix = proc(images=[Image.fromarray(a).convert("RGB") for a in images], return_tensors="pt")["pixel_values"]
    siglip = name != "monet"
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.get_image_features(pixel_values=pix).pooler_output, dim=-1)
        cls = []
        for c in task.classes:
            if siglip:
                ids = tok(fitted["prompts"][c], padding="max_length", max_length=64, return_tensors="pt")
                emb = model.get_text_features(input_ids=ids["input_ids"]).pooler_output
            else:
                ids = tok(fitted["prompts"][c], padding=True, return_tensors="pt")
                emb = model.get_text_features(**ids).pooler_output
            cls.append(torch.nn.functional.normalize(torch.nn.functional.normalize(emb, dim=-1).mean(0), dim=-1))
        logits = model.logit_scale.exp() * img @ torch.stack(cls).T
        if siglip:
            sig = torch.sigmoid(logits + model.logit_bias)
            expected = sig / sig.sum(1, keepdim=True)
        else:
            expected = torch.softmax(logits, 1)
        # one prompt per class: the same formula is transformers' own logits_per_image
        one = [fitted["prompts"][c][0] for c in task.classes]
        ids = tok(one, padding="max_length" if siglip else True, max_length=64 if siglip else None,
                  return_tensors="pt")
        out = model(input_ids=ids["input_ids"], pixel_values=pix[:4],
                    **({} if siglip else {"attention_mask": ids["attention_mask"]}))
        mine = model.logit_scale.exp() * img[:4] @ torch.nn.functional.normalize(
            model.get_text_features(**({"input_ids": ids["input_ids"]} if siglip else ids)).pooler_output, dim=-1).T
        torch.testing.assert_close(mine + (model.logit_bias if siglip else 0), out.logits_per_image,
                                   rtol=1e-5, atol=1e-5)
    frame = pd.read_parquet(result.path / "predictions.parquet")
    test = frame[frame["split"] == "test"].set_index("sample_id").loc[samples.sample_ids.astype(str)]
    got = test[[f"prob_{c}" for c in task.classes]].to_numpy()
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


# -- a directory whose processor is not the release's is refused -----------------------------------------------
@pytest.mark.parametrize("name,field,value", [("siglip_b16", "image_mean", [0.48145466, 0.4578275, 0.40821073]),
                                               ("medsiglip", "size", {"height": 224, "width": 224}),
                                               ("monet", "image_mean", [0.48145466, 0.4578275, 0.40821073])])
def test_a_directory_with_other_preprocessing_is_refused(name: str, field: str, value: object,
                                                         dirs: dict[str, Path], tmp_path: Path) -> None:
    """e.g. suinleelab/monet before commit b08d088 held OpenAI's mean/std; MONET was trained with ImageNet's."""
    from fairbench.errors import FairbenchError

    d = tmp_path / name
    shutil.copytree(dirs[name], d)
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    cfg[field] = value
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FairbenchError) as err:
        _build(name, d)
    msg = str(err.value)
    assert "\n" not in msg and "preprocessor_config.json" in msg and f"'{name}'" in msg
    assert ("mean" in msg) if field == "image_mean" else ("image_size" in msg)


def test_a_missing_sentencepiece_is_a_one_line_error(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """SiglipTokenizer needs sentencepiece and protobuf (not fairbench dependencies): say so in one line."""
    import transformers

    from fairbench.errors import FairbenchError

    def missing(*args: object, **kwargs: object) -> None:
        raise ImportError("\nSiglipTokenizer requires the protobuf library but it was not found in your environment.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", missing)
    with pytest.raises(FairbenchError) as err:
        _build("siglip_b16", dirs["siglip_b16"])
    msg = str(err.value)
    assert "\n" not in msg and "pip install sentencepiece protobuf" in msg and "protobuf library" in msg


@pytest.mark.parametrize("name", ["siglip_b16", "medsiglip", "monet"])
def test_missing_weights_are_a_one_line_error_naming_the_release(name: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    from fairbench.errors import FairbenchError
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    card = get_model_card(name)
    with pytest.raises(FairbenchError) as err:
        build_model(card, None, torch.device("cpu"))
    msg = str(err.value)
    assert "\n" not in msg and f"model '{name}'" in msg and card.weights_source in msg
    assert "hf download" in msg
