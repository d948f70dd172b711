"""Named image-only cards over ``hf_vision`` (issue 18 item 2): ``rad_dino`` (microsoft/rad-dino) and
``dinov2_b14`` (facebook/dinov2-base). Each release is rebuilt as a tiny transformers ``Dinov2Model`` written with
``save_pretrained`` beside the release's ``preprocessor_config.json`` (its values copied below from the hub files,
not from the cards). References are transformers' own: the PIL ``BitImageProcessor`` the releases' code used
(rad-dino's package: ``use_fast=False``) and ``Dinov2Model``'s ``pooler_output`` (rad-dino's model card:
``cls_embeddings = outputs.pooler_output``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "synth_zoo3"

#: the releases' preprocessor_config.json (hub files, 756 B and 436 B), verbatim values
RELEASE_PROCESSORS = {
    "rad_dino": {"crop_size": {"height": 518, "width": 518}, "do_center_crop": True, "do_convert_rgb": True,
                 "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5307, 0.5307, 0.5307],
                 "image_processor_type": "BitImageProcessor", "image_std": [0.2583, 0.2583, 0.2583], "resample": 3,
                 "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 518}},
    "dinov2_b14": {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
                   "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
                   "image_processor_type": "BitImageProcessor", "image_std": [0.229, 0.224, 0.225], "resample": 3,
                   "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256}},
}
CROP = {"rad_dino": 518, "dinov2_b14": 224}


def _release_dir(directory: Path, name: str) -> Path:
    """A tiny Dinov2Model at the release's key names (ViT-B/14 shrunk: width 32, 2 layers, patch 14)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                                     image_size=518, mlp_ratio=2, layerscale_value=1.0))
    model.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(RELEASE_PROCESSORS[name]))
    return directory


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo3")
    return {n: _release_dir(root / n, n) for n in RELEASE_PROCESSORS}


def _images() -> list[np.ndarray]:
    """Non-square inputs of several sizes, both orientations, odd sides, gray and RGB."""
    rng = np.random.default_rng(0)
    shapes = [(300, 400, 3), (517, 389, 3), (600, 519), (519, 1037, 3), (223, 301), (1000, 1301, 3)]
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]


def _reference_pixels(directory: Path, images: list[np.ndarray]) -> torch.Tensor:
    from PIL import Image
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(str(directory), backend="pil")
    assert type(proc).__name__ == "BitImageProcessorPil"
    return proc(images=[Image.fromarray(a).convert("RGB") for a in images], return_tensors="pt")["pixel_values"]


def _build(name: str, directory: Path):  # type: ignore[no-untyped-def]
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model, resolve_model_card

    card = resolve_model_card(get_model_card(name), f"local-dir:{directory}")
    return card, build_model(card, f"local-dir:{directory}", torch.device("cpu"))


@pytest.mark.parametrize("name", ["rad_dino", "dinov2_b14"])
def test_pixels_and_embedding_equal_the_release_pipeline(name: str, dirs: dict[str, Path]) -> None:
    from transformers import Dinov2Model

    from fairbench.models.preprocess import CacheGeometry

    card, model = _build(name, dirs[name])
    assert model.weights_info["model_class"] == "Dinov2Model"
    assert model.weights_info["image_processor"] == "BitImageProcessorPil"
    images = _images()
    ref = _reference_pixels(dirs[name], images)
    assert ref.shape[-1] == CROP[name]
    torch.testing.assert_close(model.preprocess(images), ref, rtol=0, atol=0)
    # through the image cache (what a run reads by default): the stored square, then the same processor
    geo = CacheGeometry(card.preprocessing)
    torch.testing.assert_close(model.preprocess([geo(a) for a in images]), ref, rtol=0, atol=0)

    upstream = Dinov2Model.from_pretrained(str(dirs[name])).eval()
    with torch.no_grad():
        ours = model.image_outputs(ref)
        theirs = upstream(pixel_values=ref)
    torch.testing.assert_close(ours["embedding"], theirs.pooler_output, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["feature"], theirs.last_hidden_state[:, 0], rtol=1e-5, atol=1e-6)


def test_generic_hf_vision_cache_keeps_the_processors_resize_before_the_crop(dirs: dict[str, Path]) -> None:
    """A processor that resizes to 256 and crops 224 (DINOv2): the image cache's square must be what the
    processor maps to its own output (it was a 224 crop, which the processor enlarged to 256 and cropped again:
    up to 2.8 normalised units off)."""
    from fairbench.models.preprocess import CacheGeometry

    card, model = _build("hf_vision", dirs["dinov2_b14"])
    images = _images()
    geo = CacheGeometry(card.preprocessing)
    # the generic card takes transformers' default backend; compare with that same processor
    from PIL import Image
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(str(dirs["dinov2_b14"]))
    direct = proc(images=[Image.fromarray(a).convert("RGB") for a in images], return_tensors="pt")["pixel_values"]
    cached = model.preprocess([geo(a) for a in images])
    # torchvision's float resize against PIL's uint8 one: within 0.02 normalised units, never a different crop
    assert float((cached - direct).abs().max()) < 0.02


def test_a_directory_with_another_processor_is_refused(dirs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from fairbench.errors import FairbenchError

    d = tmp_path / "other"
    shutil.copytree(dirs["rad_dino"], d)
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    cfg["image_mean"] = [0.485, 0.456, 0.406]  # ImageNet's: dinov2-base's, not rad-dino's
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FairbenchError) as err:
        _build("rad_dino", d)
    msg = str(err.value)
    assert "\n" not in msg and "preprocessor_config.json" in msg and "mean" in msg and "rad_dino" in msg
    with pytest.raises(FairbenchError, match=r"image_size 518, but model 'dinov2_b14' is the release with image_size \(224"):
        _build("dinov2_b14", dirs["rad_dino"])


def test_probe_runs_and_zero_shot_is_a_one_line_error(dirs: dict[str, Path], micro_task_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fairbench.errors import FairbenchError
    from fairbench.pipeline import RunConfig, run_cell

    tasks = micro_task_dir(TASK, (16, 12, 12))

    def run(adapt: str, out: Path):  # type: ignore[no-untyped-def]
        return run_cell(RunConfig(task=TASK, model="dinov2_b14", adapt=adapt, weights=f"local-dir:{dirs['dinov2_b14']}",
                                  n_boot=0, out=out, tasks_dirs=(tasks,), device="cpu"))

    result = run("linear_probe", tmp_path / "probe")
    doc = json.loads((result.path / "metrics.json").read_text())
    assert doc["model"]["name"] == "dinov2_b14" and doc["model"]["architecture"]["model_type"] == "dinov2"
    assert doc["model"]["weights"]["image_processor"] == "BitImageProcessorPil"
    assert result.metrics["metrics"]["overall"]["auc"] is not None
    with pytest.raises(FairbenchError) as err:
        run("zeroshot", tmp_path / "zs")
    assert "\n" not in str(err.value) and "image-only" in str(err.value)


# -- flair (jusiro/FLAIR): a re-implemented family ---------------------------------------------------------
#: upstream's flair/modeling/dictionary.py entries for the two classes used below (copied from the release)
UPSTREAM_GLAUCOMA = {"glaucoma": ["optic nerve abnormalities", "abnormal size of the optic cup",
                                  "anomalous size in the optic disc"],
                     "no glaucoma": ["no glaucoma"]}

FLAIR_CARD = """name: flair_release_test
family: flair
description: FLAIR's module tree with torchvision's ResNet at full width, one block per stage; test build
architecture:
  resnet: {layers: [1, 1, 1, 1], width: 64}
  text: {vocab_size: 512, hidden_size: 16, num_hidden_layers: 3, num_attention_heads: 2,
         intermediate_size: 32, max_position_embeddings: 128}
  proj_dim: 16
  context_length: 77
weights:
  source: random
  files: [flair_resnet.pth|model.safetensors]
  tokenizer: tiny
preprocessing: {image_size: 64, resize: canvas, interpolation: bilinear, mean: [0, 0, 0], std: [1, 1, 1]}
probe_feature: embedding
lora_targets: ['re:vision_model\\.model\\.layer[34]\\.\\d+\\.conv[123]']
"""


class _UpstreamFLAIR(torch.nn.Module):
    """FLAIRModel's module tree and forward as flair/modeling/model.py writes them, from torchvision and
    transformers directly (torchvision ResNet with fc = Identity; BertModel with pooler)."""

    def __init__(self) -> None:
        from torchvision.models.resnet import Bottleneck, ResNet
        from transformers import BertConfig, BertModel

        super().__init__()
        torch.manual_seed(1)
        self.vision_model = torch.nn.Module()
        self.vision_model.model = ResNet(Bottleneck, [1, 1, 1, 1])
        self.vision_model.model.fc = torch.nn.Identity()
        self.vision_model.projection_head_vision = torch.nn.Module()
        self.vision_model.projection_head_vision.projection = torch.nn.Linear(2048, 16, bias=False)
        self.text_model = torch.nn.Module()
        self.text_model.model = BertModel(BertConfig(vocab_size=512, hidden_size=16, num_hidden_layers=3,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     max_position_embeddings=128), add_pooling_layer=True)
        self.text_model.projection_head_text = torch.nn.Module()
        self.text_model.projection_head_text.projection = torch.nn.Linear(16, 16, bias=False)
        self.logit_scale = torch.nn.Parameter(torch.tensor(5.3))  # above upstream's clamp (4.6052)
        for m in self.modules():  # batch-norm statistics away from their defaults
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        self.eval()

    @staticmethod
    def _project(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        x = x / x.norm(dim=-1, keepdim=True)
        x = layer(x)
        return x / x.norm(dim=-1, keepdim=True)

    def image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._project(self.vision_model.projection_head_vision.projection, self.vision_model.model(pixels))

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.text_model.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hs = torch.stack([out["hidden_states"][1], out["hidden_states"][2], out["hidden_states"][-1]])
        return self._project(self.text_model.projection_head_text.projection, hs.permute(1, 0, 2, 3).mean(2).mean(1))


def _upstream_canvas(img: np.ndarray, size: int) -> torch.Tensor:
    """LoadImage + ImageScaling(canvas=True) of flair/pretraining/data/transforms.py, with torchvision's
    Resize transform as upstream calls it."""
    from PIL import Image
    from torchvision.transforms import Resize

    x = np.array(Image.fromarray(img).convert("RGB"), dtype=float)
    if np.max(x) > 1:
        x /= 255
    t = torch.tensor(np.transpose(x, (2, 0, 1)))
    if t.shape[-1] == t.shape[-2]:
        return Resize((size, size))(t).float()
    scale = max(t.shape[-2:]) / size
    t = Resize((int(t.shape[-2] / scale), int(t.shape[-1] / scale)))(t)
    return torch.nn.functional.pad(t, (0, size - t.shape[-1], 0, size - t.shape[-2], 0, 0)).float()


@pytest.fixture(scope="module")
def flair_release(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The release's layouts: flair_resnet.pth (torch.save of the state dict, with the position_ids buffer
    transformers < 4.31 saved) and the hub's model.safetensors; and a card for the shapes."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("flair")
    ref = _UpstreamFLAIR()
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    (root / "pth").mkdir()
    legacy = {**state, "text_model.model.embeddings.position_ids": torch.arange(128)[None]}
    torch.save(legacy, root / "pth" / "flair_resnet.pth")
    (root / "hub").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "hub" / "model.safetensors"))
    (root / "flair_release_test.yaml").write_text(FLAIR_CARD)
    return ref, root


def _flair(root: Path, layout: str):  # type: ignore[no-untyped-def]
    from fairbench.models.base import load_model_card
    from fairbench.models.build import build_model

    card = load_model_card(root / "flair_release_test.yaml")
    return card, build_model(card, f"local-dir:{root / layout}", torch.device("cpu"))


@pytest.mark.parametrize("layout", ["pth", "hub"])
def test_flair_release_layout_loads_and_matches_the_upstream_forward(layout: str, flair_release) -> None:  # type: ignore[no-untyped-def]
    ref, root = flair_release
    _, model = _flair(root, layout)  # strict: zero missing, zero unexpected keys
    assert set(model.module.state_dict()) == set(ref.state_dict())
    rng = np.random.default_rng(3)
    pixels = torch.tensor(rng.random((3, 3, 64, 64)), dtype=torch.float32)
    with torch.no_grad():
        ours = model.image_outputs(pixels)
        torch.testing.assert_close(ours["embedding"], ref.image(pixels), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours["feature"], ref.image(pixels), rtol=1e-5, atol=1e-6)
        texts = ["A fundus photograph of glaucoma", "A fundus photograph of no glaucoma at all, truly"]
        tokens = model.tokenize(texts)
        from transformers import BertTokenizer

        tok = BertTokenizer.from_pretrained(model.tokenizer.name_or_path)
        expected = tok(texts, truncation=True, padding=True, max_length=77, return_tensors="pt")
        assert torch.equal(tokens["input_ids"], expected["input_ids"])
        torch.testing.assert_close(model.encode_text(tokens),
                                   ref.text(expected["input_ids"], expected["attention_mask"]), rtol=1e-5, atol=1e-6)


def test_flair_zero_shot_is_upstreams_domain_knowledge_rule(flair_release) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    ref, root = flair_release
    _, model = _flair(root, "pth")
    task = SimpleNamespace(classes=("glaucoma", "no glaucoma"), prompts=None)
    head = model.zeroshot_head(task)
    # upstream: descriptions (+ the class name unless listed) in the caption, one batch per class, prototype =
    # mean of the normalised projections (not re-normalised), logits = exp(clamp(logit_scale)) x image @ T
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(model.tokenizer.name_or_path)
    protos = []
    for c in task.classes:
        descriptions = list(UPSTREAM_GLAUCOMA[c]) + ([c] if c not in UPSTREAM_GLAUCOMA[c] else [])
        prompts = ["A fundus photograph of [CLS]".replace("[CLS]", d) for d in descriptions]
        t = tok(prompts, truncation=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            protos.append(ref.text(t["input_ids"], t["attention_mask"]).mean(0))
    assert head.prompts[0] == ["A fundus photograph of optic nerve abnormalities",
                               "A fundus photograph of abnormal size of the optic cup",
                               "A fundus photograph of anomalous size in the optic disc",
                               "A fundus photograph of glaucoma"]
    assert head.prompts[1] == ["A fundus photograph of no glaucoma"]
    # the class prototypes themselves: a mean of unit vectors, not re-normalised (norm below 1 for glaucoma)
    with torch.no_grad():
        ours_protos = model.class_embeddings(head.prompts)
    torch.testing.assert_close(ours_protos, torch.stack(protos), rtol=1e-5, atol=1e-6)
    assert float(torch.stack(protos)[0].norm()) < 0.999
    rng = np.random.default_rng(4)  # images of unlike content, so that their embeddings differ
    pixels = torch.tensor(np.stack([rng.random((3, 64, 64)) * k + np.linspace(0, 1 - k, 64)[None, None, ::sgn]
                                    for k, sgn in ((1.0, 1), (0.2, 1), (0.5, -1), (0.05, -1))]), dtype=torch.float32)
    with torch.no_grad():
        img = ref.image(pixels)
        expected = (torch.stack(protos) @ img.t() * ref.logit_scale.data.clamp(0, 4.6052).exp()).t().softmax(-1)
        ours = head.score(model.image_outputs(pixels)).softmax(-1)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_flair_pixels_equal_upstreams_canvas(flair_release) -> None:  # type: ignore[no-untyped-def]
    from fairbench.models.preprocess import CacheGeometry

    _, root = flair_release
    card, model = _flair(root, "pth")
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(100, 150, 3), (151, 99), (64, 64, 3), (40, 41),
                                                                   (300, 200, 3), (97, 97)]]
    ours = model.preprocess(images)
    expected = torch.stack([_upstream_canvas(a, 64) for a in images])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    # through the image cache: the uint8 canvas, which the pipeline maps onto itself (half a grey level)
    geo = CacheGeometry(card.preprocessing)
    cached = model.preprocess([geo(a) for a in images])
    assert float((cached - expected).abs().max()) <= 0.5 / 255 + 1e-6


def test_flair_refuses_a_checkpoint_with_a_missing_key(flair_release, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from fairbench.errors import FairbenchError

    _, root = flair_release
    state = torch.load(root / "pth" / "flair_resnet.pth", weights_only=True)
    del state["vision_model.projection_head_vision.projection.weight"]
    (tmp_path / "bad").mkdir()
    torch.save(state, tmp_path / "bad" / "flair_resnet.pth")
    shutil.copy(root / "flair_release_test.yaml", tmp_path / "flair_release_test.yaml")
    with pytest.raises(FairbenchError) as err:
        _flair(tmp_path, "bad")
    assert "\n" not in str(err.value) and "projection_head_vision" in str(err.value)


def test_tiny_flair_runs_zero_shot_and_probe(micro_task_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fairbench.pipeline import RunConfig, run_cell

    tasks = micro_task_dir(TASK, (16, 12, 12))
    for adapt in ("zeroshot", "linear_probe"):
        result = run_cell(RunConfig(task=TASK, model="tiny_flair", adapt=adapt, weights="random", n_boot=0,
                                    out=tmp_path / adapt, tasks_dirs=(tasks,), device="cpu"))
        assert result.metrics["metrics"]["overall"]["auc"] is not None
        if adapt == "zeroshot":  # the synthetic task's "normal" is a FLAIR class: its expert descriptions
            fitted = result.metrics["adapt"]["fitted"]
            assert fitted["zeroshot"]["rule"] == "flair_mean"
            assert fitted["prompts"]["normal"][0] == "A fundus photograph of healthy"
            assert fitted["zeroshot"]["sources"] == {"normal": "definitions", "abnormal": "class name"}


def test_flair_lora_targets_adapt_the_vision_tower_only() -> None:
    import re

    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model
    from fairbench.models.flair import FLAIRModule

    model = build_model(get_model_card("tiny_flair"), "random", torch.device("cpu"))
    module = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=model.lora_target_modules()),
                                     model.module)
    adapted = [n for n, m in module.named_modules() if isinstance(m, LoraLayer)]
    assert len(adapted) == 6 and all(n.startswith("vision_model.model.layer") for n in adapted)  # 2 blocks x 3
    with torch.no_grad():
        assert torch.isfinite(model.image_outputs(torch.rand(1, 3, 64, 64))["embedding"]).all()
    # the released architecture (meta device): ResNet-50's layer3 (6 blocks) and layer4 (3), conv1-3 each
    card = get_model_card("flair")
    with torch.device("meta"):
        names = [n for n, _ in FLAIRModule(card.architecture).named_modules()]
    pattern = re.compile(model.lora_target_modules())
    hits = [n for n in names if pattern.fullmatch(n)]
    assert len(hits) == 27 and not any(n.startswith("text_model.") for n in hits)
