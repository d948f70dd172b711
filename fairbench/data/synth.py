"""Procedural synthetic chest radiographs with reports, protected attributes and per-group bias knobs.

This is the data behind the embedded default task ``synth_cxr``: deterministic, fast and free to ship.
It is synthetic data for testing and demonstrating fairbench, not a medical benchmark.

>>> cfg = SynthConfig.from_options({"n": {"test": 8}, "image_size": 64})
>>> split = generate_split(cfg, "test", seed=0)
>>> split.images.shape, split.images.dtype
((8, 64, 64), dtype('uint8'))

``generate_split(config, split, seed)`` gives the same bytes for the same arguments. Each random quantity
comes from its own stream, derived from (seed, split name, quantity name), so splits and seeds are
independent, and changing one knob (say a bias rule's noise) leaves unrelated draws (the patients'
anatomy, ages, findings) as they were. See ``docs/synthetic.md`` for every knob and the bias of the
default preset.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from fairbench.data.synth_config import ATTRIBUTES, FINDINGS, RACES, SEXES, BiasRule, SynthConfig
from fairbench.data.synth_findings import FINDING_NAMES, MM_PER_UNIT, draw_finding_params
from fairbench.data.synth_render import Renderer, draw_anatomy
from fairbench.data.synth_reports import write_reports
from fairbench.errors import DataError

__all__ = [
    "ATTRIBUTES",
    "BIASED_DEFAULT",
    "FAIR_DEFAULT",
    "FINDINGS",
    "GENERATOR_VERSION",
    "BiasRule",
    "ReportTexts",
    "SynthConfig",
    "SynthSplit",
    "generate_split",
]

#: Bumped whenever the same (options, split, seed) would give different bytes; caches key on it.
GENERATOR_VERSION = "3"

assert FINDING_NAMES == FINDINGS  # the renderer's finding codes follow FINDINGS

_N = {"train": 2000, "val": 500, "test": 1500}

#: Options of the ``synth_cxr`` task: a known, documented bias (see docs/synthetic.md).
#: The groups singled out are arbitrary choices for demonstration; they model no real population.
BIASED_DEFAULT: dict = {
    "n": dict(_N),
    "bias": [
        # strong acquisition degradation for older patients: AUC drops for age >= 60
        {"attribute": "age", "min": 60, "contrast": 0.3, "noise": 0.08, "blur": 2.0},
        # noisier labels (and so reports) for women: milder AUC drop measured against recorded labels
        {"attribute": "sex", "groups": ["F"], "label_noise": 0.08},
        # fewer abnormal studies among White patients: selection-rate / demographic-parity gaps
        {"attribute": "race", "groups": ["White"], "prevalence": 0.6},
        # a burned-in marker that tracks the label in the train split only, for Asian patients
        {"attribute": "race", "groups": ["Asian"], "marker_pos": 0.9, "marker_neg": 0.05},
    ],
}

#: Options of the ``synth_cxr_fair`` task: the same generator with identical label and image distributions
#: across groups: no bias rules, and sex and age do not shape the anatomy either.
FAIR_DEFAULT: dict = {"n": dict(_N), "anatomy_by_attribute": False, "bias": []}


@dataclass
class SynthSplit:
    """One generated split; every array has one entry per sample, in the same order."""

    sample_ids: np.ndarray           # str, f"synth-{split}-{i:06d}"
    images: np.ndarray | None        # uint8 [N, H, W]; None when generated with render=False
    finding: np.ndarray              # str: "normal" or one of FINDINGS (the truth drawn in the image)
    label_finding: np.ndarray        # str: the recorded label, after label noise
    attributes: dict[str, np.ndarray]  # "sex" (str), "age" (int years), "race" (str)
    reports: Sequence[str]           # written from label_finding: a list; ReportTexts when render=False
    marker: np.ndarray               # bool: burned-in marker drawn
    #: renders the images chunk by chunk on demand (the same bytes as ``images``)
    renderer: Renderer | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)


# -- random streams ---------------------------------------------------------------------------------------
def _stream(seed: int, split: str, name: str) -> np.random.Generator:
    """An independent generator per (seed, split, quantity); 256 separates the two byte strings."""
    key = (*split.encode(), 256, *name.encode())
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _pixel_stream(seed: int, split: str, chunk: int) -> np.random.Generator:
    """The pixel-noise generator of chunk ``chunk`` (a module-level function: a renderer pickles)."""
    return _stream(seed, split, f"pixels{chunk}")


def _categorical(rng: np.random.Generator, n: int, mix: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    cdf = np.cumsum([mix[k] for k in names])
    idx = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(names) - 1)
    return idx


def _ages(rng: np.random.Generator, n: int, cfg: SynthConfig) -> np.ndarray:
    lo, hi = cfg.age_min, cfg.age_max
    m = (cfg.age_mean - lo) / (hi - lo)
    v = (cfg.age_sd / (hi - lo)) ** 2
    k = m * (1 - m) / v - 1
    return np.rint(lo + (hi - lo) * rng.beta(m * k, (1 - m) * k, n)).astype(np.int64)


def _combine(rules: tuple[BiasRule, ...], attributes: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Per-sample effect of all bias rules (see BiasRule for how overlapping rules combine)."""
    e = {
        "contrast": np.ones(n), "noise2": np.zeros(n), "haze2": np.zeros(n), "blur": np.zeros(n),
        "keep_label": np.ones(n),
        "prevalence": np.ones(n), "no_pos": np.ones(n), "no_neg": np.ones(n), "no_eval_pos": np.ones(n),
        "no_eval_neg": np.ones(n),
    }
    for rule in rules:
        m = rule.matches(attributes)
        e["contrast"][m] *= rule.contrast
        e["noise2"][m] += rule.noise ** 2
        e["haze2"][m] += rule.haze ** 2
        e["blur"][m] = np.maximum(e["blur"][m], rule.blur)
        e["keep_label"][m] *= 1.0 - rule.label_noise
        e["prevalence"][m] *= rule.prevalence
        e["no_pos"][m] *= 1.0 - rule.marker_pos
        e["no_neg"][m] *= 1.0 - rule.marker_neg
        if rule.marker_eval == "train":
            e["no_eval_pos"][m] *= 1.0 - rule.marker_pos
            e["no_eval_neg"][m] *= 1.0 - rule.marker_neg
        else:
            p_eval = (rule.marker_pos + rule.marker_neg) / 2 if rule.marker_eval is None else float(rule.marker_eval)
            e["no_eval_pos"][m] *= 1.0 - p_eval
            e["no_eval_neg"][m] *= 1.0 - p_eval
    return e


def _zone(y: np.ndarray) -> np.ndarray:
    return np.where(y < -0.25, "upper", np.where(y < 0.05, "middle", "lower"))


def _details(f: dict[str, np.ndarray], labels: np.ndarray) -> list[dict[str, str]]:
    """Placeholders of each sample's report, from the drawn parameters of its recorded finding."""
    side = np.where(f["side"] < 0, "right", "left")
    eff_side = np.where(f["eff_side"] < 0, "right", np.where(f["eff_side"] > 0, "left", "bilateral"))
    eff_size = np.where(f["eff_amount"] < 0.35, "small", np.where(f["eff_amount"] < 0.7, "moderate", "large"))
    c = f["cardio_factor"]
    sev = np.where(c < 1.40, "mild", np.where(c < 1.50, "moderate", "marked"))
    sevly = np.where(c < 1.40, "mildly", np.where(c < 1.50, "moderately", "markedly"))
    pc = f["ptx_collapse"]
    ptx_size = np.where(pc < 0.65, "large", np.where(pc < 0.75, "moderate", "small"))
    nod_zone, mass_zone = _zone(f["nod_y"]), _zone(f["mass_y"])
    cons_zone = np.array(["upper", "middle", "lower"])[f["cons_zone"]]
    mm = np.rint(2 * f["nod_r"] * MM_PER_UNIT).astype(int)
    cm = np.round(2 * f["mass_r"] * MM_PER_UNIT / 10, 1)
    out: list[dict[str, str]] = []
    for i, label in enumerate(labels):
        if label == "cardiomegaly":
            d = {"sev": sev[i], "sevly": sevly[i]}
        elif label == "effusion":
            both = eff_side[i] == "bilateral"
            d = {"side": eff_side[i], "size": eff_size[i],
                 "angle": "both costophrenic angles" if both else f"the {eff_side[i]} costophrenic angle",
                 "base": "both lung bases" if both else f"the {eff_side[i]} lung base"}
        elif label == "nodule":
            d = {"side": side[i], "zone": nod_zone[i], "mm": str(mm[i])}
        elif label == "mass":
            d = {"side": side[i], "zone": mass_zone[i], "cm": f"{cm[i]:.1f}"}
        elif label == "pneumothorax":
            d = {"side": side[i], "size": ptx_size[i]}
        elif label == "consolidation":
            d = {"side": side[i], "zone": cons_zone[i]}
        else:
            d = {}
        out.append({k: str(v) for k, v in d.items()})
    return out


class ReportTexts(Sequence[str]):
    """A split's reports, written when asked for, ``CHUNK`` at a time (a sequence of str, as a list of them).

    :func:`write_reports` draws from one stream sample after sample, so report ``i`` depends on the stream's
    state after report ``i - 1``: the first time a chunk is reached, the chunks before it are written in order
    (and dropped), keeping the generator's state at each chunk's start; afterwards any chunk is rewritten from
    its saved state. The texts are those of one ``write_reports`` call over the whole split; the arrays they are
    written from (recorded label codes, finding parameters, age, aorta) are the ones the split already holds.
    The most recently written ``KEEP`` chunks are kept."""

    CHUNK = 1024
    KEEP = 4

    def __init__(self, rng: np.random.Generator, codes: np.ndarray, names: np.ndarray,
                 findings: dict[str, np.ndarray], age: np.ndarray, aorta: np.ndarray, incidental_rate: float) -> None:
        self.n = len(codes)
        self.codes, self.names = codes, names
        self.findings = {k: findings[k] for k in _DETAIL_KEYS}
        self.age, self.aorta, self.incidental_rate = age, aorta, incidental_rate
        self._bitgen = type(rng.bit_generator)
        self._states: list[dict] = [rng.bit_generator.state]
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[int, list[str]] = OrderedDict()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"], state["_kept"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup()

    def __len__(self) -> int:
        return self.n

    def _write(self, ci: int) -> list[str]:
        """Chunk ``ci`` from its saved state (which exists); saves the next chunk's state if it is new."""
        bitgen = self._bitgen()
        bitgen.state = self._states[ci]
        rng = np.random.Generator(bitgen)
        sl = slice(ci * self.CHUNK, min(self.n, (ci + 1) * self.CHUNK))
        labels = self.names[self.codes[sl]]
        texts = write_reports(rng, labels, _details({k: v[sl] for k, v in self.findings.items()}, labels),
                              self.age[sl], self.aorta[sl], self.incidental_rate)
        if len(self._states) == ci + 1:
            self._states.append(rng.bit_generator.state)
        return texts

    def chunk(self, ci: int) -> list[str]:
        with self._lock:
            texts = self._kept.get(ci)
            if texts is not None:
                self._kept.move_to_end(ci)
                return texts
            for k in range(len(self._states) - 1, ci):  # walk the stream up to this chunk once
                self._write(k)
            texts = self._write(ci)
            self._kept[ci] = texts
            while len(self._kept) > self.KEEP:
                self._kept.popitem(last=False)
            return texts

    @overload
    def __getitem__(self, key: int) -> str: ...

    @overload
    def __getitem__(self, key: slice) -> list[str]: ...

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(self.n))]
        if not isinstance(key, (int, np.integer)):
            raise TypeError(f"report indices must be integers or slices, not {type(key).__name__}")
        i = int(key)
        if not -self.n <= i < self.n:
            raise IndexError(f"report index {i} out of range for {self.n} reports")
        i %= self.n
        return self.chunk(i // self.CHUNK)[i % self.CHUNK]

    def __iter__(self) -> Iterator[str]:
        for ci in range(-(-self.n // self.CHUNK)):
            yield from self.chunk(ci)


#: the finding parameters a report's placeholders are written from (:func:`_details`)
_DETAIL_KEYS = ("side", "eff_side", "eff_amount", "cardio_factor", "ptx_collapse", "nod_y", "mass_y", "cons_zone",
                "nod_r", "mass_r")


# -- the generator ----------------------------------------------------------------------------------------
def generate_split(config: SynthConfig, split: str, seed: int, *, render: bool = True) -> SynthSplit:
    """Generate split ``split`` (a key of ``config.n``) deterministically from ``seed``.

    ``render=False`` leaves ``images`` None: every other field is drawn, and ``renderer`` renders any chunk
    of images when asked (the same bytes), so a large split never has to be held in memory."""
    if split not in config.n:
        raise DataError(f"synthetic data: unknown split {split!r}; the options 'n' define "
                        f"{', '.join(sorted(config.n))}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"synthetic data: seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    n = config.n[split]

    rng = _stream(seed, split, "attributes")
    sex = np.array(SEXES)[_categorical(rng, n, config.sex_mix, SEXES)]
    race = np.array(RACES)[_categorical(rng, n, config.race_mix, RACES)]
    age = _ages(rng, n, config)
    attributes = {"sex": sex, "age": age, "race": race}
    effect = _combine(config.bias, attributes, n)

    rng = _stream(seed, split, "labels")
    u_abnormal, u_flip = rng.random(n), rng.random(n)
    kind = _categorical(rng, n, config.finding_mix, FINDINGS)
    abnormal = u_abnormal < np.clip(config.prevalence * effect["prevalence"], 0.0, 1.0)
    names = np.array(("normal",) + FINDINGS)
    code = np.where(abnormal, kind + 1, 0)
    flip = u_flip < 1.0 - effect["keep_label"]
    recorded = np.where(flip, np.where(abnormal, 0, kind + 1), code)   # flips normal <-> abnormal

    rng = _stream(seed, split, "marker")
    u_marker = rng.random(n)
    marker_xy = np.column_stack([rng.uniform(0.80, 0.86, n), rng.uniform(0.035, 0.09, n)])
    if split == "train":
        p_marker = 1.0 - np.where(recorded > 0, effect["no_pos"], effect["no_neg"])
    else:
        p_marker = 1.0 - np.where(recorded > 0, effect["no_eval_pos"], effect["no_eval_neg"])
    marker = u_marker < p_marker

    anatomy = draw_anatomy(_stream(seed, split, "anatomy"), sex, age, config.anatomy_by_attribute)
    findings = draw_finding_params(_stream(seed, split, "findings"), n)
    renderer = Renderer(
        config.image_size, anatomy, findings, code, config.finding_strength,
        degrade={"contrast": effect["contrast"], "haze": np.sqrt(effect["haze2"]), "blur": effect["blur"],
                 "noise": np.sqrt(config.noise ** 2 + effect["noise2"])},
        marker=marker, marker_xy=marker_xy, chunk_rng=functools.partial(_pixel_stream, seed, split),
    )

    label_finding = names[recorded]
    # written from the renderer's (compactly held) parameters: no second copy of them
    reports = ReportTexts(_stream(seed, split, "reports"), recorded.astype(np.int8), names, renderer.findings, age,
                          renderer.a["aorta"], config.incidental_rate)
    return SynthSplit(
        sample_ids=np.array([f"synth-{split}-{i:06d}" for i in range(n)], dtype=str),
        images=renderer.render_all() if render else None,
        finding=names[code],
        label_finding=label_finding,
        attributes=attributes,
        reports=list(reports) if render else reports,
        marker=marker,
        renderer=renderer,
    )
