"""Pieces that tiny test builds need and that no download may provide.

- :func:`tiny_vocab_dir`: a BERT word-piece vocabulary of exactly :data:`TINY_VOCAB_SIZE` tokens (special
  tokens, the words of the CheXpert prompt generator and common prompt words, then single characters and
  ``##`` continuations so that any ASCII text tokenises), written once to the fairbench cache. Tiny cards say
  ``weights: {tokenizer: tiny}``.
- :func:`register_tiny_timm`: the timm model ``fairbench_tiny_vit`` (registered through timm's
  ``build_model_with_cfg``, as open_clip's timm tower needs a ``default_cfg``) for the tiny BiomedCLIP build.
- :func:`local_config_dir`: a Hugging Face ``config.json`` written from a dict, for towers that open_clip
  builds with ``AutoConfig.from_pretrained(path)`` (BiomedCLIP's BERT), so nothing is fetched by name.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from pathlib import Path
from typing import Any

from fairbench.cards import card_sha256
from fairbench.models.weights import cache_root

__all__ = ["TINY_VOCAB_SIZE", "local_config_dir", "register_tiny_timm", "tiny_vocab", "tiny_vocab_dir"]

TINY_VOCAB_SIZE = 512
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = ["a", "an", "the", "of", "and", "or", "with", "without", "in", "at", "is", "are", "this", "there", "no", "not", "photo", "picture", "image", "chest", "x", "ray", "xray", "radiograph", "scan", "normal", "abnormal", "finding", "findings", "disease", "diseased", "healthy", "present", "absent", "evidence", "lung", "lungs", "left", "right", "upper", "lower", "mid", "middle", "zone", "base", "bases", "bilateral", "lobe", "heart", "cardiac", "size", "silhouette", "mild", "minimal", "moderate", "severe", "small", "large", "stable", "increased", "decreased", "improved", "improvement", "persistent", "atelectasis", "cardiomegaly", "consolidation", "edema", "effusion", "pleural", "pneumonia", "pneumothorax", "opacity", "fracture", "device", "devices", "support", "lesion", "enlarged", "fundus", "glaucoma", "eye", "retina", "optic", "disc", "female", "male", "older", "younger", "patient", "subsegmental", "linear", "trace", "bibasilar", "retrocardiac", "bandlike", "residual", "reticular", "patchy", "airspace", "partial", "pulmonary", "interstitial", "subpulmonic", "tiny", "portable", "view", "demonstrates", "unchanged", "borderline", "limits", "likely", "ventricular", "other", "chambers", "less", "prominent", "vessels", "remains", "redemonstration", "erect", "ap", "which", "upper", "apperance", "presistent", "uppper"]


def tiny_vocab() -> list[str]:
    vocab = list(_SPECIAL)
    seen = set(vocab)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    for tok in [*chars, *[f"##{c}" for c in string.ascii_lowercase + string.digits], *_WORDS]:
        if tok not in seen:
            vocab.append(tok)
            seen.add(tok)
    if len(vocab) > TINY_VOCAB_SIZE:  # pragma: no cover - guarded by a test
        raise RuntimeError(f"tiny vocabulary has {len(vocab)} tokens, more than {TINY_VOCAB_SIZE}")
    vocab += [f"[unused{i}]" for i in range(TINY_VOCAB_SIZE - len(vocab))]
    return vocab


def _write_dir(kind: str, files: dict[str, str]) -> Path:
    """Write ``files`` into a content-addressed directory under the cache (atomically, once)."""
    key = card_sha256(files)[:16]
    target = cache_root() / "tiny" / f"{kind}-{key}"
    if all((target / name).is_file() for name in files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    for name, text in files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; its directory has the same content
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return target


def tiny_vocab_dir() -> Path:
    """A tokenizer directory (``vocab.txt`` + ``tokenizer_config.json``) for the tiny BERT-style towers."""
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}
    return _write_dir("bert-vocab", {"vocab.txt": "\n".join(tiny_vocab()) + "\n",
                                     "tokenizer_config.json": json.dumps(config, indent=1)})


def local_config_dir(config: dict[str, Any]) -> Path:
    """A directory holding ``config.json`` = ``config`` (must name its ``model_type``)."""
    if "model_type" not in config:
        raise ValueError("a local Hugging Face config needs a 'model_type'")
    return _write_dir("hf-config", {"config.json": json.dumps(config, indent=1, sort_keys=True)})


def register_tiny_timm() -> None:
    """Register ``fairbench_tiny_vit`` with timm (idempotent)."""
    import timm
    from timm.models import build_model_with_cfg, register_model
    from timm.models.vision_transformer import VisionTransformer

    if timm.is_model("fairbench_tiny_vit"):
        return

    def fairbench_tiny_vit(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
        args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
        cfg = kwargs.pop("pretrained_cfg", None) or {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5),
                                                     "std": (0.5, 0.5, 0.5), "num_classes": 0}
        return build_model_with_cfg(VisionTransformer, "fairbench_tiny_vit", pretrained, pretrained_cfg=cfg,
                                    **dict(args, **kwargs))

    fairbench_tiny_vit.__module__ = __name__
    register_model(fairbench_tiny_vit)
