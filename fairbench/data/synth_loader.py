"""The ``synth_cxr`` dataset loader: wraps the procedural generator (:mod:`fairbench.data.synth`).

Card options are the generator's options (see ``docs/synthetic.md``) plus ``seed``. Generated splits are
kept in memory for the life of the process, so the pipeline and tinyclip pretraining share them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fairbench.cards import card_sha256
from fairbench.data.base import ArrayImages, RawSplit
from fairbench.errors import CardError, DataError

__all__ = ["SynthCXRLoader"]


class SynthCXRLoader:
    needs_data_root = False
    #: dataset options ``--task-arg KEY=VALUE`` may override (dotted: nested), with their types
    task_args: ClassVar[dict[str, type]] = {"n.train": int, "n.val": int, "n.test": int, "image_size": int}

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        from fairbench.data import synth

        opts = dict(options)
        seed = opts.pop("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise CardError(f"{source}: field 'seed' must be a non-negative integer, got {seed!r}")
        try:
            self.config = synth.SynthConfig.from_options(opts)
        except DataError as exc:
            raise CardError(f"{source}: {exc}") from None
        self.seed = seed
        self._fingerprint = card_sha256({"options": opts, "seed": seed,
                                         "generator": getattr(synth, "GENERATOR_VERSION", "1")})

    def fingerprint(self) -> str:
        return self._fingerprint

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        return _generate(self._fingerprint, self.config, split, self.seed)


_CACHE: dict[tuple[str, str, int], RawSplit] = {}
_CACHE_SIZE = 8


def _generate(fingerprint: str, config: Any, split: str, seed: int) -> RawSplit:
    key = (fingerprint, split, seed)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _build(fingerprint, config, split, seed)
    return _CACHE[key]


def _build(fingerprint: str, config: Any, split: str, seed: int) -> RawSplit:
    from fairbench.data import synth

    if split not in config.n:
        raise CardError(f"synth_cxr: no split named {split!r} (the generator has {', '.join(config.n)})")
    s = synth.generate_split(config, split, seed)
    columns = {
        "finding": np.asarray(s.label_finding, dtype=object),
        "true_finding": np.asarray(s.finding, dtype=object),
        **{k: np.asarray(v) for k, v in s.attributes.items()},
    }
    extra = {"true_finding": np.asarray(s.finding, dtype=object), "marker": np.asarray(s.marker, dtype=bool)}
    images = ArrayImages(s.images, key=f"synth_cxr:{fingerprint[:16]}:{split}:{seed}")
    return RawSplit(sample_ids=np.asarray(s.sample_ids), columns=columns, images=images, texts=list(s.reports),
                    extra=extra)
