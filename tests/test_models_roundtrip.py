"""Every family: a tiny build saved in its OFFICIAL checkpoint layout loads back through the production loader
with identical outputs; library-backed families also match the library's own model on the same weights."""

from __future__ import annotations

import copyreg
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fairbench.errors import WeightsError
from fairbench.models.base import get_model_card
from fairbench.models.build import build_model

CPU = torch.device("cpu")
TEXTS = ["mild atelectasis at the lung bases", "a chest x-ray showing no acute cardiopulmonary abnormality",
         "cardiomegaly. 2. stable"]


def _images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 7 * i, 36 + 5 * i), dtype=np.uint8) for i in range(n)]


def _outputs(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        out = dict(model.image_outputs(model.preprocess(_images())))
        out["text"] = model.encode_text(model.tokenize(TEXTS))
        out["similarity"] = model.similarity(out["embedding"], out["text"])
    return out


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _copy_tokenizer(dest: Path) -> None:
    from fairbench.models.tiny import tiny_vocab_dir

    for f in tiny_vocab_dir().iterdir():
        shutil.copy(f, dest / f.name)


# -- OpenAI CLIP -------------------------------------------------------------------------------------
def _openai_torchscript(model: torch.nn.Module, path: Path) -> None:
    """An archive in OpenAI's layout: a traced CLIP whose state_dict has open_clip's (= OpenAI's) key names
    plus input_resolution/context_length/vocab_size, stored in fp16 like OpenAI's release."""
    m = model.float().eval()
    for attr in ("context_length", "vocab_size"):  # plain ints on open_clip's CLIP, buffers in OpenAI's archive
        if attr in m.__dict__:
            delattr(m, attr)
    if "attn_mask" in m._buffers:  # a plain tensor attribute in OpenAI's model, not part of its state_dict
        mask = m._buffers.pop("attn_mask")
        m.attn_mask = mask
    m.register_buffer("input_resolution", torch.tensor(32))
    m.register_buffer("context_length", torch.tensor(77))
    m.register_buffer("vocab_size", torch.tensor(49408))
    example = (torch.zeros(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long))
    traced = torch.jit.trace(m, example, strict=False, check_trace=False)
    traced.half()
    torch.jit.save(traced, str(path))


def test_openai_clip_torchscript_matches_open_clip(tmp_path: Path) -> None:
    import open_clip

    card = get_model_card("tiny_openai_clip")
    src = build_model(card, "random", CPU)
    path = tmp_path / "ViT-tiny.pt"
    _openai_torchscript(src.module, path)
    loaded = build_model(card, str(path), CPU)
    assert loaded.weights_info["format"] == "openai-torchscript"
    ref = open_clip.load_openai_model(str(path), device="cpu", precision="fp32").eval()
    x = loaded.preprocess(_images())
    tokens = loaded.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), ref.encode_image(x))
        assert torch.equal(loaded.encode_text(tokens), ref.encode_text(tokens))
        assert torch.equal(loaded.logit_scale(), ref.logit_scale.exp())


def test_openai_clip_hub_layout_roundtrip_and_library(tmp_path: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    card = get_model_card("tiny_openai_clip")
    src = build_model(card, "random", CPU)
    (tmp_path / "hub").mkdir()
    save_file({k: v.contiguous() for k, v in src.module.state_dict().items()},
              str(tmp_path / "hub" / "open_clip_model.safetensors"))
    loaded = build_model(card, f"local-dir:{tmp_path / 'hub'}", CPU)
    _assert_identical(_outputs(src), _outputs(loaded))
    assert len(loaded.weights_info["sha256"]) == 64
    arch = {k: v for k, v in card.architecture.items() if k != "model_name"}
    ref = open_clip.create_model("ViT-B-16-quickgelu", pretrained=str(tmp_path / "hub" / "open_clip_model.safetensors"),
                                 **arch).eval()
    x = loaded.preprocess(_images())
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), ref.encode_image(x))
        assert torch.equal(loaded.encode_text(loaded.tokenize(TEXTS)), ref.encode_text(loaded.tokenize(TEXTS)))


def test_hf_hub_source_resolves_from_local_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc
    from safetensors.torch import save_file

    card = get_model_card("tiny_openai_clip")
    src = build_model(card, "random", CPU)
    snap = tmp_path / "hub" / "models--org--tiny-clip" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="not in the local Hugging Face cache"):
        build_model(card, "hf-hub:org/other", CPU)
    with pytest.raises(WeightsError, match="open_clip_model.safetensors or open_clip_pytorch_model.bin"):
        build_model(card, "hf-hub:org/tiny-clip", CPU)
    save_file(dict(src.module.state_dict()), str(snap / "open_clip_model.safetensors"))
    loaded = build_model(card, "hf-hub:org/tiny-clip", CPU)
    assert loaded.weights_info["source"] == "hf-hub:org/tiny-clip"
    assert loaded.weights_info["revision"] == "0123abcd"  # the snapshot the weights were read from
    _assert_identical(_outputs(src), _outputs(loaded))


# -- BiomedCLIP ----------------------------------------------------------------------------------------
def test_biomedclip_official_layout_roundtrip_and_open_clip(tmp_path: Path) -> None:
    import open_clip

    from fairbench.models.openclip import open_clip_model_cfg

    card = get_model_card("tiny_biomedclip")
    src = build_model(card, "random", CPU)
    d = tmp_path / "biomedclip"
    d.mkdir()
    model_cfg = open_clip_model_cfg(card)  # hf_model_name = a local tiny BERT config dir
    (d / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {**model_cfg, "text_cfg": {**model_cfg["text_cfg"], "hf_tokenizer_name": "tiny-bert"}},
        "preprocess_cfg": {"mean": list(card.preprocessing.mean), "std": list(card.preprocessing.std)}}))
    torch.save(src.module.state_dict(), d / "open_clip_pytorch_model.bin")
    _copy_tokenizer(d)
    loaded = build_model(card, f"local-dir:{d}", CPU)
    _assert_identical(_outputs(src), _outputs(loaded))

    ref, _ = open_clip.create_model_from_pretrained(f"local-dir:{d}")
    ref.eval()
    tok = open_clip.get_tokenizer(f"local-dir:{d}")
    x = loaded.preprocess(_images())
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), ref.encode_image(x))
        assert torch.equal(tok(TEXTS), loaded.tokenize(TEXTS))
        assert torch.equal(loaded.encode_text(tok(TEXTS)), ref.encode_text(tok(TEXTS)))


def test_biomedclip_checkpoint_with_position_ids_loads_as_open_clip_loads_it(tmp_path: Path) -> None:
    """A BiomedCLIP .bin saved with transformers < 4.31 carries the BERT position_ids buffer; open_clip's
    load_checkpoint deletes it before its strict load, and so must fairbench."""
    import open_clip

    from fairbench.models.openclip import open_clip_model_cfg

    card = get_model_card("tiny_biomedclip")
    src = build_model(card, "random", CPU)
    d = tmp_path / "biomedclip"
    d.mkdir()
    model_cfg = open_clip_model_cfg(card)
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    state = dict(src.module.state_dict())
    key = "text.transformer.embeddings.position_ids"
    assert key not in state
    n_pos = card.architecture["hf_text_config"]["max_position_embeddings"]
    state[key] = torch.arange(n_pos).expand((1, -1)).clone()
    torch.save(state, d / "open_clip_pytorch_model.bin")
    _copy_tokenizer(d)
    ref, _ = open_clip.create_model_from_pretrained(f"local-dir:{d}")  # strict load in open_clip itself
    loaded = build_model(card, f"local-dir:{d}", CPU)
    _assert_identical(_outputs(src), _outputs(loaded))
    x = loaded.preprocess(_images())
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), ref.eval().encode_image(x))


def test_biomedclip_config_must_match_the_card(tmp_path: Path) -> None:
    card = get_model_card("tiny_biomedclip")
    src = build_model(card, "random", CPU)
    d = tmp_path / "other"
    d.mkdir()
    cfg = json.loads(json.dumps(card.architecture["model_cfg"]))
    cfg["embed_dim"] = 32
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(src.module.state_dict(), d / "open_clip_pytorch_model.bin")
    with pytest.raises(WeightsError, match="embed_dim"):
        build_model(card, f"local-dir:{d}", CPU)


# -- MedCLIP -----------------------------------------------------------------------------------------
def _transformers4_swin_key(key: str) -> str:
    """This module's (transformers 5) Swin names -> the names in MedCLIP's 2022 checkpoint (transformers 4)."""
    for new, old in [("attention.q_proj.", "attention.self.query."), ("attention.k_proj.", "attention.self.key."),
                     ("attention.v_proj.", "attention.self.value."), ("attention.o_proj.", "attention.output.dense."),
                     ("attention.relative_position_bias.relative_position_bias_table",
                      "attention.self.relative_position_bias_table"),
                     ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense.")]:
        if new in key:
            return key.replace(new, old)
    return key


def _medclip_official_state(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    state = {}
    for key, value in model.module.state_dict().items():
        state[_transformers4_swin_key(key) if key.startswith("vision_model.model.") else key] = value.clone()
    # transformers-4 persistent buffers: Swin's relative_position_index, BERT's position_ids
    for name, buf in model.module.named_buffers():
        if name.endswith("relative_position_bias.relative_position_index"):
            state[name.replace("attention.relative_position_bias.", "attention.self.")] = buf.clone()
    n_pos = model.module.text_model.model.config.max_position_embeddings
    state["text_model.model.embeddings.position_ids"] = torch.arange(n_pos).expand((1, -1)).clone()
    return state


@pytest.mark.parametrize("name", ["tiny_medclip_vit", "tiny_medclip_resnet"])
def test_medclip_official_layout_roundtrip(tmp_path: Path, name: str) -> None:
    card = get_model_card(name)
    src = build_model(card, "random", CPU)
    state = _medclip_official_state(src)
    if name == "tiny_medclip_vit":
        assert "vision_model.model.encoder.layers.0.blocks.0.attention.self.query.weight" in state
        assert "vision_model.model.encoder.layers.0.blocks.0.attention.self.relative_position_index" in state
        assert "vision_model.model.encoder.layers.0.blocks.0.output.dense.weight" in state
        assert "vision_model.projection_head.weight" in state
    else:
        assert "vision_model.model.fc.weight" in state and "vision_model.projection_head.weight" not in state
    assert "text_model.model.encoder.layer.0.attention.self.query.weight" in state  # BERT keeps its names
    d = tmp_path / "medclip"
    d.mkdir()
    torch.save(state, d / "pytorch_model.bin")
    for spec in (f"local-dir:{d}", str(d / "pytorch_model.bin")):
        loaded = build_model(card, spec, CPU)
        _assert_identical(_outputs(src), _outputs(loaded))
    # the weights are identified by their tensors as loaded (after the renames), not by the file's bytes
    from fairbench.models.weights import tensors_sha256

    assert loaded.weights_info["files"] == ["pytorch_model.bin"]
    assert loaded.weights_info["sha256"] == tensors_sha256(src.module.state_dict())


def test_medclip_wrong_checkpoint_names_the_keys(tmp_path: Path) -> None:
    card = get_model_card("tiny_medclip_vit")
    src = build_model(card, "random", CPU)
    state = _medclip_official_state(src)
    state.pop("text_model.projection_head.weight")
    state["something.else"] = torch.zeros(1)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"1 missing keys .*projection_head.*1 unexpected keys .*something"):
        build_model(card, str(tmp_path / "pytorch_model.bin"), CPU)


# -- GLoRIA ------------------------------------------------------------------------------------------
def _fake_modules(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    """Stand-ins for omegaconf and pytorch_lightning classes, registered under their real module paths so
    that torch.save pickles them by those names (as GLoRIA's checkpoint does)."""
    classes = {}
    for module, names in {"omegaconf.dictconfig": ["DictConfig"], "omegaconf.listconfig": ["ListConfig"],
                          "omegaconf.base": ["ContainerMetadata", "Metadata"], "omegaconf.nodes": ["AnyNode"],
                          "pytorch_lightning.callbacks.model_checkpoint": ["ModelCheckpoint"]}.items():
        mod = types.ModuleType(module)
        for n in names:
            cls = type(n, (), {"__module__": module})
            setattr(mod, n, cls)
            classes[n] = cls
        monkeypatch.setitem(sys.modules, module, mod)
        parts = module.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules:
                monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    return classes


def _omegaconf_like(classes: dict[str, type], value):  # type: ignore[no-untyped-def]
    """A DictConfig-shaped object graph (state dicts with _metadata/_parent/_content, leaf AnyNodes)."""
    def meta(kind: str):  # type: ignore[no-untyped-def]
        m = classes[kind].__new__(classes[kind])
        m.__dict__.update({"ref_type": Any, "object_type": dict, "optional": True, "key": None, "flags": {}})
        return m

    if isinstance(value, dict):
        node = classes["DictConfig"].__new__(classes["DictConfig"])
        node.__dict__.update({"_metadata": meta("ContainerMetadata"), "_parent": None,
                              "_content": {k: _omegaconf_like(classes, v) for k, v in value.items()}})
        return node
    node = classes["AnyNode"].__new__(classes["AnyNode"])
    node.__dict__.update({"_metadata": meta("Metadata"), "_parent": None, "_val": value})
    return node


GLORIA_HPARAMS = {"model": {"vision": {"model_name": "resnet_50", "pretrained": True, "freeze_cnn": False},
                            "text": {"bert_type": "emilyalsentzer/Bio_ClinicalBERT", "last_n_layers": 4,
                                     "aggregate_method": "sum", "norm": False, "embedding_dim": 16,
                                     "agg_tokens": True},
                            "gloria": {"temp1": 4.0, "temp2": 5.0, "temp3": 10.0}},
                  "data": {"text": {"word_num": 97}, "image": {"imsize": 40}},
                  "transforms": {"norm": "half", "random_crop": {"crop_size": 32}}}


def _lightning_ckpt(model, hparams, classes) -> dict:  # type: ignore[no-untyped-def]
    state = {f"gloria.{k}": v.clone() for k, v in model.module.state_dict().items()}
    n_pos = model.module.text_encoder.model.config.max_position_embeddings
    state["gloria.text_encoder.model.embeddings.position_ids"] = torch.arange(n_pos).expand((1, -1)).clone()
    return {"epoch": 12, "global_step": 3456, "pytorch-lightning_version": "1.1.4",
            "callbacks": {classes["ModelCheckpoint"]: {"best_model_score": torch.tensor(1.23),
                                                       "best_model_path": "/data/ckpt/epoch=12.ckpt"}},
            "optimizer_states": [{"state": {0: {"step": 10, "exp_avg": torch.zeros(3)}},
                                  "param_groups": [{"lr": 5e-5, "betas": (0.5, 0.999), "params": [0]}]}],
            "lr_schedulers": [{"best": float("inf"), "mode": "min", "factor": 0.5}],
            "state_dict": state, "hyper_parameters": _omegaconf_like(classes, hparams)}


def test_gloria_lightning_checkpoint_roundtrip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = get_model_card("tiny_gloria")
    src = build_model(card, "random", CPU)
    classes = _fake_modules(monkeypatch)
    path = tmp_path / "chexpert_resnet50.ckpt"
    torch.save(_lightning_ckpt(src, GLORIA_HPARAMS, classes), path)
    monkeypatch.undo()  # the stand-ins are gone again: loading must not need them
    for spec in (str(path), f"local-dir:{tmp_path}"):
        loaded = build_model(card, spec, CPU)
        a, b = _outputs(src), _outputs(loaded)
        _assert_identical(a, b)
    cfg = loaded.weights_info["checkpoint_config"]
    assert cfg["model.vision.model_name"] == "resnet_50" and cfg["data.text.word_num"] == 97


def test_gloria_checkpoint_with_other_hparams_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = get_model_card("tiny_gloria")
    src = build_model(card, "random", CPU)
    classes = _fake_modules(monkeypatch)
    hp = json.loads(json.dumps(GLORIA_HPARAMS))
    hp["data"]["text"]["word_num"] = 64
    torch.save(_lightning_ckpt(src, hp, classes), tmp_path / "x.ckpt")
    monkeypatch.undo()
    with pytest.raises(WeightsError, match="word_num=64"):
        build_model(card, str(tmp_path / "x.ckpt"), CPU)


def test_gloria_checkpoint_with_real_omegaconf(tmp_path: Path) -> None:
    """Real OmegaConf objects (in the test extra: a missing omegaconf fails here instead of skipping)."""
    import omegaconf

    card = get_model_card("tiny_gloria")
    src = build_model(card, "random", CPU)
    state = {f"gloria.{k}": v for k, v in src.module.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": omegaconf.OmegaConf.create(GLORIA_HPARAMS)},
               tmp_path / "real.ckpt")
    loaded = build_model(card, str(tmp_path / "real.ckpt"), CPU)
    _assert_identical(_outputs(src), _outputs(loaded))
    assert loaded.weights_info["checkpoint_config"]["model.text.last_n_layers"] == 4


def test_unsafe_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    copyreg.dispatch_table.pop(Payload, None)
    torch.save({"state_dict": {}, "hyper_parameters": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightsError, match="not on fairbench's allow-list"):
        build_model(get_model_card("tiny_gloria"), str(tmp_path / "evil.ckpt"), CPU)
    assert not marker.exists()


# -- BLIP-2 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shard", [None, "40KB"])
def test_blip2_hf_directory_roundtrip_and_transformers(tmp_path: Path, shard: str | None) -> None:
    card = get_model_card("tiny_blip2")
    src = build_model(card, "random", CPU)
    d = tmp_path / "blip2"
    kwargs = {"max_shard_size": shard} if shard else {}
    src.module.save_pretrained(str(d), **kwargs)
    _copy_tokenizer(d)
    loaded = build_model(card, f"local-dir:{d}", CPU)
    _assert_identical(_outputs(src), _outputs(loaded))
    assert len(loaded.weights_info["files"]) == (1 if shard is None else len(list(d.glob("*.safetensors"))))
    x = loaded.preprocess(_images())
    tokens = loaded.tokenize(TEXTS)
    with torch.no_grad():
        ref = loaded.module(pixel_values=x, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                            use_image_text_matching_head=False)
        ours = loaded.similarity(loaded.image_outputs(x)["embedding"], loaded.encode_text(tokens))
    torch.testing.assert_close(ours, ref.logits_per_image, rtol=0, atol=1e-6)


def test_checkpoint_of_another_architecture_is_one_line_naming_tensors_and_the_card_it_fits(tmp_path: Path) -> None:
    """issue 21 item 4: a tinyclip file given to an OpenAI-CLIP card. load_state_dict raises a multi-line
    RuntimeError on shape mismatches; fairbench names the first differing tensor with both shapes and the card the
    file fits. The expected shapes are read from open_clip's own models, not from fairbench."""
    import subprocess

    import open_clip
    from safetensors.torch import save_file

    tiny = get_model_card("tinyclip")
    arch = {k: v for k, v in tiny.architecture.items() if k != "model_name"}
    other = open_clip.create_model(tiny.architecture["model_name"], pretrained=None, **arch)
    path = tmp_path / "tinyclip.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    card = get_model_card("tiny_openai_clip")
    arch = {k: v for k, v in card.architecture.items() if k != "model_name"}
    ours = open_clip.create_model(card.architecture["model_name"], pretrained=None, **arch).state_dict()
    key = next(k for k, v in other.state_dict().items() if k in ours and ours[k].shape != v.shape)
    with pytest.raises(WeightsError) as err:
        build_model(card, str(path), CPU)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{key}: card ({', '.join(map(str, ours[key].shape))}), file " \
           f"({', '.join(map(str, other.state_dict()[key].shape))})" in msg, msg
    assert "fits model card 'tinyclip'" in msg, msg
    proc = subprocess.run([sys.executable, "-m", "fairbench", "run", "--model", "tiny_openai_clip", "--weights",
                           str(path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "fits model card 'tinyclip'" in lines[0]


def test_checkpoint_that_fits_no_card_says_which_cards_were_compared(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    card = get_model_card("tiny_openai_clip")
    state = {k: v.contiguous() for k, v in build_model(card, "random", CPU).module.state_dict().items()}
    state["visual.proj"] = torch.zeros(3, 3)
    path = tmp_path / "odd.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"visual\.proj: card \(64, 32\), file \(3, 3\).*fits none of the cards "
                                           r"with the same key layout \(.*tinyclip"):
        build_model(card, str(path), CPU)
