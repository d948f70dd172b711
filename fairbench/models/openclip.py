"""The open_clip family: OpenAI CLIP, BiomedCLIP and the tiny ``tinyclip`` used by tests and the default run.

Architectures come from the card: ``architecture.model_name`` names one of open_clip's built-in configs (with
keyword overrides), or ``architecture.model_cfg`` is a full open_clip model config (BiomedCLIP's
``open_clip_config.json`` ``model_cfg``). A Hugging Face text tower (``text_cfg.hf_model_name``) is built from
``architecture.hf_text_config`` written to a local ``config.json`` (open_clip calls
``AutoConfig.from_pretrained`` on that name), never from the hub.

Weights, by source:

- a file: OpenAI's TorchScript ``.pt`` (read with ``torch.jit.load``: no Python unpickling; only its
  parameters are taken, its code never runs), ``.safetensors``, or a ``torch.save`` state dict read with
  ``weights_only=True``;
- ``local-dir:`` / ``hf-hub:``: the card's ``weights.files`` in an open_clip hub layout
  (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``; BiomedCLIP also
  ``open_clip_config.json``, checked against the card, and its tokenizer files).

Every load is strict: zero missing and zero unexpected keys, after dropping what open_clip's own
``load_checkpoint`` drops (the text tower's ``position_ids`` buffer saved by transformers < 4.31).
"""

from __future__ import annotations

import contextlib
import json
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fairbench.errors import CardError, WeightsError
from fairbench.models.base import ModelCard, VLModel
from fairbench.models.family import Family
from fairbench.models.inputs import INSTEAD, locate_aux, resolve_inputs, weights_dir_holds
from fairbench.models.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocessing
from fairbench.models.weights import WeightsSource, files_info, locate

if TYPE_CHECKING:
    from fairbench.models.inputs import ModelInputs

__all__ = [
    "FAMILY",
    "OpenCLIPModel",
    "build_open_clip",
    "create_architecture",
    "is_torchscript",
    "load_openai_torchscript",
    "load_state_file",
    "load_strict",
    "open_clip_inputs",
    "open_clip_model_cfg",
]


class OpenCLIPModel(VLModel):
    def __init__(self, card: ModelCard, model: Any, tokenizer: Any, device: torch.device,
                 weights_info: dict[str, Any]) -> None:
        from fairbench.models.fast_ops import use_inplace_quick_gelu

        self.card = card
        self.model = model.to(device).eval()
        use_inplace_quick_gelu(self.model)
        self.tokenizer = tokenizer
        self.device = device
        self.weights_info = weights_info
        self.context_length = int(_text_cfg(card).get("context_length", 77))

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), context_length=self.context_length).to(self.device)

    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = pixels.to(self.device)
        if self.card.probe_feature == "embedding":
            emb = self.model.encode_image(pixels)
            return {"embedding": emb, "feature": emb}
        if self.card.probe_feature != "pre_projection":
            raise WeightsError(f"model '{self.card.name}': unknown probe_feature {self.card.probe_feature!r}")
        visual = self.model.visual
        with _without_projection(visual) as proj:
            pooled = visual(pixels)
        emb = proj(pooled) if callable(proj) else pooled @ proj
        return {"embedding": emb, "feature": pooled}

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()


@contextlib.contextmanager
def _without_projection(visual: torch.nn.Module):  # type: ignore[no-untyped-def]
    """Run the vision tower without its final projection, in the same forward pass (one encode gives both
    the probe feature and the joint embedding). Yields the projection (a Parameter or a module)."""
    if isinstance(getattr(visual, "proj", None), torch.nn.Parameter):
        proj = visual.proj
        visual.proj = None
        try:
            yield proj
        finally:
            visual.proj = proj
    elif hasattr(visual, "head"):  # timm-backed towers (BiomedCLIP): head is the projection
        head = visual.head
        visual.head = torch.nn.Identity()
        try:
            yield head
        finally:
            visual.head = head
    else:
        raise WeightsError(f"{type(visual).__name__}: cannot separate the projection for probe features")


def _text_cfg(card: ModelCard) -> dict[str, Any]:
    arch = card.architecture
    return dict(arch["model_cfg"].get("text_cfg", {}) if "model_cfg" in arch else arch.get("text_cfg", {}))


def open_clip_model_cfg(card: ModelCard) -> dict[str, Any]:
    """The card's custom open_clip ``model_cfg`` with the Hugging Face text tower pointed at a local config
    directory (and never at pretrained hub weights)."""
    from fairbench.models.tiny import local_config_dir, register_tiny_timm

    arch = card.architecture
    cfg = json.loads(json.dumps(arch["model_cfg"]))
    vision = cfg.get("vision_cfg", {})
    if str(vision.get("timm_model_name", "")).startswith("fairbench_"):
        register_tiny_timm()
    vision["timm_model_pretrained"] = False
    text = cfg.get("text_cfg", {})
    if text.get("hf_model_name"):
        hf_config = arch.get("hf_text_config")
        if not isinstance(hf_config, dict):
            raise CardError(f"{card.path}: field 'architecture.hf_text_config' is required with a Hugging Face text "
                            f"tower (the {text['hf_model_name']} config, so nothing is fetched by name)")
        text["hf_model_name"] = str(local_config_dir(hf_config))
        text["hf_model_pretrained"] = False
        text.pop("hf_tokenizer_name", None)
    return cfg


def create_architecture(card: ModelCard) -> Any:
    import open_clip

    arch = dict(card.architecture)
    # open_clip warns that no pretrained weights were loaded: fairbench loads them itself
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        if "model_cfg" in arch:
            cfg = open_clip_model_cfg(card)
            cls = open_clip.CustomTextCLIP if cfg.get("text_cfg", {}).get("hf_model_name") else open_clip.CLIP
            return cls(**cfg)
        model_name = arch.pop("model_name")
        return open_clip.create_model(model_name, pretrained=None, **arch)
    finally:
        logger.setLevel(level)


def is_torchscript(path: Path) -> bool:
    """OpenAI's original ``.pt`` files are TorchScript archives (a zip with ``constants.pkl``/``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def load_openai_torchscript(path: Path) -> dict[str, torch.Tensor]:
    """The parameters of an OpenAI CLIP TorchScript archive in open_clip's key layout (float32).

    ``torch.jit.load`` reads the archive without Python unpickling; fairbench takes ``state_dict()`` and never
    calls the archive's code. OpenAI stores fp16 weights; open_clip's ``load_openai_model`` builds in fp16 and
    calls ``.float()`` on CPU, which is what the cast below does. The three metadata entries
    (``input_resolution``, ``context_length``, ``vocab_size``) are dropped as open_clip does.
    """
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path}: not a readable TorchScript archive ({type(exc).__name__}: {exc})") from None
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a ``torch.save`` file, never unpickling arbitrary objects."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad or unsafe file
        raise WeightsError(f"{path}: cannot be read as a state dict with weights_only=True ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, where: str,
                card: ModelCard | None = None) -> None:
    """Load ``state`` into ``model`` when names and shapes match exactly; otherwise one :class:`WeightsError`
    line naming the first differing tensors and the model card(s) the file fits (checked before loading, as
    ``load_state_dict`` raises a multi-line error on shape mismatches)."""
    from fairbench.models.fit import mismatch_message

    msg = mismatch_message(model, state, where=where, card=card)
    if msg:
        raise WeightsError(msg)
    model.load_state_dict(state, strict=True)


def _tokenizer(card: ModelCard, location: Path) -> Any:
    """open_clip's tokenizer for a built-in config; else a Hugging Face tokenizer from the directory
    :func:`fairbench.models.inputs.resolve_inputs` found."""
    import open_clip

    if "model_cfg" not in card.architecture:
        return open_clip.get_tokenizer(card.architecture["model_name"])
    from open_clip.tokenizer import HFTokenizer

    ctx = int(_text_cfg(card).get("context_length", 77))
    return HFTokenizer(str(location), context_length=ctx, local_files_only=True)


def _check_dir_config(card: ModelCard, directory: Path) -> None:
    """An ``open_clip_config.json`` beside the weights must describe the card's architecture."""
    path = directory / "open_clip_config.json"
    if "model_cfg" not in card.architecture or not path.is_file():
        return
    try:
        theirs = json.loads(path.read_text())["model_cfg"]
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: not an open_clip config ({exc})") from None
    ours = card.architecture["model_cfg"]
    ignore = {"hf_model_name", "hf_tokenizer_name", "hf_model_pretrained", "timm_model_pretrained"}
    diffs = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(key)
    if diffs:
        raise WeightsError(f"{path} describes another architecture than model card '{card.name}' "
                           f"({card.path}): {', '.join(diffs)} differ")


def _weights_file(card: ModelCard, location: Path) -> Path:
    if location.is_file():
        return location
    for entry in card.weights_files:
        for alt in entry.split("|"):
            p = location / alt
            if p.is_file() and p.suffix in (".bin", ".safetensors", ".pt", ".pth"):
                return p
    raise CardError(f"{card.path}: field 'weights.files' names no weights file (.bin/.safetensors/.pt) "
                    f"for a directory source")


#: transformers < 4.31 saved BERT's ``position_ids`` buffer; open_clip's ``load_checkpoint`` deletes it
POSITION_IDS_KEY = "text.transformer.embeddings.position_ids"


def drop_stale_position_ids(state: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """``state`` without the Hugging Face text tower's ``position_ids`` when the model has no such entry (now a
    non-persistent buffer), as open_clip's ``load_checkpoint`` does (BiomedCLIP's published checkpoint)."""
    if POSITION_IDS_KEY in state and POSITION_IDS_KEY not in target_keys:
        state = {k: v for k, v in state.items() if k != POSITION_IDS_KEY}
    return state


def read_open_clip_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_openai_torchscript(path) if is_torchscript(path) else load_state_file(path)


def build_open_clip(card: ModelCard, source: WeightsSource, device: torch.device) -> OpenCLIPModel:
    if not card.architecture:
        raise CardError(f"model '{card.name}' needs --model-arg arch=NAME (the generic open_clip model)")
    if source.scheme not in ("random", "file", "local-dir", "hf-hub"):
        raise WeightsError(f"model '{card.name}': weights source '{source.describe()}' is not supported by the "
                           f"open_clip family (use a checkpoint file, local-dir:, hf-hub: or 'random')")
    inputs = resolve_inputs(card, source)
    inputs.raise_if_missing()  # weights and tokenizer, every missing file at once, before any heavy work
    if source.scheme == "random":
        model = create_architecture(card)
        info: dict[str, Any] = {"source": "random", "sha256": "random"}
    else:
        location = inputs.weights
        assert location is not None
        if location.is_dir():
            _check_dir_config(card, location)
        path = _weights_file(card, location)
        model = create_architecture(card)
        state = drop_stale_position_ids(read_open_clip_weights(path), set(model.state_dict()))
        load_strict(model, state, where=str(path), card=card)
        info = files_info(source.describe() if source.scheme != "file" else str(path), [path], model)
        if is_torchscript(path):
            info["format"] = "openai-torchscript"
    return OpenCLIPModel(card, model, _tokenizer(card, inputs.tokenizer), device, {**info, **inputs.info()})


def open_clip_inputs(inputs: ModelInputs) -> None:
    """open_clip's tokenizer and configuration: a built-in config (``architecture.model_name``) uses open_clip's
    bundled BPE vocabulary; a custom ``model_cfg`` with a Hugging Face text tower reads a tokenizer directory
    (the weights directory when it holds the files, else the card's ``weights.tokenizer``; ``tiny``: the test
    vocabulary). ``open_clip_config.json`` beside the weights is the configuration file."""
    from fairbench.models.tiny import tiny_vocab_dir

    card, source, wdir = inputs.card, inputs.source, inputs.weights_dir
    if "model_cfg" not in card.architecture:
        from open_clip.tokenizer import default_bpe

        inputs.tokenizer, inputs.tokenizer_source = Path(default_bpe()), "open_clip"
    else:
        tok_files = ("tokenizer_config.json", "tokenizer.json|vocab.txt")
        if weights_dir_holds(wdir, tok_files):
            inputs.tokenizer, inputs.tokenizer_source = wdir, source.describe()
        elif card.tokenizer_source == "tiny":
            inputs.tokenizer, inputs.tokenizer_source = tiny_vocab_dir(), "tiny"
        elif card.tokenizer_source:
            inputs.tokenizer = locate_aux(inputs, card.tokenizer_source, tok_files, "tokenizer", instead=INSTEAD)
            inputs.tokenizer_source = card.tokenizer_source
        else:
            inputs.problems.append(f"{card.path}: field 'weights.tokenizer' is required for a Hugging Face "
                                   f"text tower")
    if wdir is not None and (wdir / "open_clip_config.json").is_file():
        inputs.config = wdir / "open_clip_config.json"


#: the generic card's model arguments
OPEN_CLIP_ARGS = ("arch",)


def resolve_open_clip_card(card: ModelCard, source: WeightsSource, args: dict[str, Any]) -> ModelCard:
    """A complete open_clip card is returned as it is (and takes no model arguments). The generic card
    ``open_clip`` (empty ``architecture``) is completed from ``--model-arg arch=NAME`` (one of open_clip's
    built-in configs, e.g. ViT-B-16) and that config's own preprocessing: image size from ``vision_cfg``, mean,
    std, interpolation and resize mode from its ``preprocess_cfg`` (open_clip's defaults: OpenAI mean/std,
    bicubic, shortest side), overridden by ``preprocess_cfg`` of an ``open_clip_config.json`` beside the weights
    (the hub layout)."""
    import dataclasses

    if card.architecture:
        if args:
            raise CardError(f"--model-arg {next(iter(args))}: model '{card.name}' takes no model arguments (its card "
                            f"fixes the architecture; the generic open_clip model takes arch=NAME)")
        return card
    import open_clip

    if source.scheme == "file" and not source.value:
        raise WeightsError(f"model '{card.name}' needs --weights: a checkpoint FILE of the architecture, "
                           f"local-dir:DIR or hf-hub:ORG/REPO in open_clip's hub layout, or random")
    unknown = sorted(set(args) - set(OPEN_CLIP_ARGS))
    if unknown:
        raise CardError(f"--model-arg {unknown[0]}: model '{card.name}' takes {', '.join(OPEN_CLIP_ARGS)}")
    arch = str(args.get("arch", ""))
    if not arch:
        raise CardError(f"model '{card.name}' needs --model-arg arch=NAME, one of open_clip's architectures "
                        f"(e.g. ViT-B-16, ViT-B-32-quickgelu, RN50; open_clip.list_models() lists them)")
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        raise CardError(f"--model-arg arch={arch}: not an open_clip architecture"
                        f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}")
    text = cfg.get("text_cfg", {})
    if text.get("hf_tokenizer_name") or text.get("hf_model_name"):
        raise CardError(f"--model-arg arch={arch}: its text tower or tokenizer is a Hugging Face model that open_clip "
                        f"would fetch by name; write a model card with the tokenizer and text config instead "
                        f"(docs/adding-a-model.md)")
    pre_cfg = dict(cfg.get("preprocess_cfg", {}))
    if source.scheme in ("local-dir", "hf-hub"):
        directory = locate(source, card=card, files=card.weights_files)
        if (directory / "open_clip_config.json").is_file():
            try:
                pre_cfg.update(json.loads((directory / "open_clip_config.json").read_text()).get("preprocess_cfg", {}))
            except (OSError, ValueError) as exc:
                raise WeightsError(f"{directory / 'open_clip_config.json'}: not an open_clip config ({exc})") from None
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    resize = {"shortest": "shortest", "squash": "square"}.get(str(pre_cfg.get("resize_mode", "shortest")))
    if resize is None:
        raise CardError(f"--model-arg arch={arch}: resize_mode {pre_cfg.get('resize_mode')!r} is not supported "
                        f"(shortest or squash)")
    interp = str(pre_cfg.get("interpolation", "bicubic"))
    if interp not in ("bicubic", "bilinear", "nearest"):
        raise CardError(f"--model-arg arch={arch}: interpolation {interp!r} is not supported")
    pre = Preprocessing(image_size=int(pre_cfg.get("size", size)) if not isinstance(pre_cfg.get("size"), list)
                        else int(pre_cfg["size"][0]),
                        mean=tuple(pre_cfg.get("mean", OPENAI_MEAN)), std=tuple(pre_cfg.get("std", OPENAI_STD)),
                        resize=resize, interpolation=interp)
    architecture = {"model_name": arch}
    raw = {**card.raw, "architecture": architecture, "preprocessing": dict(pre.__dict__), "model_args": dict(args),
           "weights": {**card.raw.get("weights", {}), "source": source.describe()}}
    return dataclasses.replace(card, architecture=architecture, preprocessing=pre, raw=raw,
                               weights_source=source.describe())


def open_clip_architecture(card: ModelCard) -> torch.nn.Module:
    """The card's bare open_clip module (no weights; :mod:`fairbench.models.fit` builds it on the meta device)."""
    arch = dict(card.architecture)
    if "model_cfg" in arch:
        return create_architecture(card)
    import open_clip

    return open_clip.create_model(arch.pop("model_name"), pretrained=None, device="meta", **arch)


FAMILY = Family(build=build_open_clip, inputs=open_clip_inputs, resolve_card=resolve_open_clip_card,
                architecture=open_clip_architecture, layout="open_clip")
