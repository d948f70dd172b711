"""Options of the synthetic chest-radiograph generator: :class:`SynthConfig` and its per-group bias rules.

Everything a task card may set lives here, with its default and its check. ``SynthConfig.from_options``
turns a plain options dict (as written in a task card) into a validated, frozen config and rejects unknown
keys and wrong types with a :class:`~fairbench.errors.DataError` that names the option and what was
expected. ``SynthConfig.to_options`` gives the canonical dict back (every key, JSON-serialisable), so a
config can be hashed or recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fairbench.errors import DataError

__all__ = ["ATTRIBUTES", "FINDINGS", "RACES", "SEXES", "BiasRule", "SynthConfig"]

FINDINGS: tuple[str, ...] = ("cardiomegaly", "effusion", "nodule", "mass", "pneumothorax", "consolidation")
ATTRIBUTES: tuple[str, ...] = ("sex", "age", "race")
SEXES: tuple[str, ...] = ("F", "M")
RACES: tuple[str, ...] = ("Asian", "Black", "White")
_CATEGORIES = {"sex": SEXES, "race": RACES}

_BIAS_EFFECT_KEYS = (
    "contrast", "noise", "haze", "blur", "label_noise", "prevalence", "marker_pos", "marker_neg", "marker_eval",
)
_BIAS_KEYS = ("attribute", "groups", "min", "max", *_BIAS_EFFECT_KEYS)


# -- small checkers: every message names the option and says what was expected --------------------------
def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(where: str, value: object, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> float:
    if not _is_number(value):
        raise DataError(f"synthetic option {where!r}: expected a number, got {value!r}")
    v = float(value)  # type: ignore[arg-type]
    if lo is not None and (v < lo or (lo_open and v == lo)):
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise DataError(f"synthetic option {where!r}: expected a number {bound}, got {value!r}")
    if hi is not None and v > hi:
        raise DataError(f"synthetic option {where!r}: expected a number <= {hi:g}, got {value!r}")
    return v


def _probability(where: str, value: object) -> float:
    return _number(where, value, lo=0.0, hi=1.0)


def _integer(where: str, value: object, *, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"synthetic option {where!r}: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise DataError(f"synthetic option {where!r}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def _mapping(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DataError(f"synthetic option {where!r}: expected a mapping, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise DataError(f"synthetic option {where!r}: expected string keys, got {key!r}")
    return value


def _unknown_keys(where: str, given: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise DataError(
            f"synthetic option {where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"expected some of {', '.join(allowed)}"
        )


def _mix(where: str, value: object, names: tuple[str, ...]) -> dict[str, float]:
    """A weight per name (missing names weigh 0), normalised to sum to 1."""
    given = _mapping(where, value)
    _unknown_keys(repr(where), given, names)
    weights = {name: _number(f"{where}.{name}", given.get(name, 0.0), lo=0.0) for name in names}
    total = sum(weights.values())
    if total <= 0:
        raise DataError(f"synthetic option {where!r}: expected at least one positive weight, got {value!r}")
    if abs(total - 1.0) < 1e-9:  # already normalised (e.g. from to_options): keep the exact values
        return weights
    return {name: w / total for name, w in weights.items()}


# -- bias rules ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BiasRule:
    """One per-group bias: which samples it selects and what it does to them.

    Selection: ``attribute`` is ``"sex"`` or ``"race"`` with ``groups`` (a list of group labels), or
    ``"age"`` with ``min`` (inclusive) and/or ``max`` (exclusive) in years. A sample matched by several rules
    gets all of them: contrast factors multiply, noise and haze SDs add in quadrature, the largest blur wins,
    prevalence multipliers multiply (the result is clipped to [0, 1]), and probabilities (label noise,
    markers) combine as independent events.
    """

    attribute: str
    groups: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    contrast: float = 1.0        # multiplies image contrast about the image mean (1 = unchanged)
    noise: float = 0.0           # extra Gaussian noise sigma, on the [0, 1] intensity scale
    haze: float = 0.0            # SD of smooth blotches (uneven exposure / scatter) over the body, [0, 1] scale
    blur: float = 0.0            # Gaussian blur sigma in pixels at 128 px (scaled with image_size)
    label_noise: float = 0.0     # probability the recorded label flips normal <-> abnormal
    prevalence: float = 1.0      # multiplier on the probability of being abnormal
    marker_pos: float = 0.0      # train split: P(marker | recorded label abnormal)
    marker_neg: float = 0.0      # train split: P(marker | recorded label normal)
    # other splits: P(marker), independent of the label; None = mean of the two; "train" = as in the train split
    # (P(marker | label) = marker_pos / marker_neg: the association holds in every split)
    marker_eval: float | str | None = None

    @classmethod
    def from_options(cls, options: object, index: int) -> BiasRule:
        where = f"bias[{index}]"
        given = _mapping(where, options)
        _unknown_keys(where, given, _BIAS_KEYS)
        if "attribute" not in given:
            raise DataError(f"synthetic option {where}: missing 'attribute' (one of {', '.join(ATTRIBUTES)})")
        attribute = given["attribute"]
        if attribute not in ATTRIBUTES:
            raise DataError(
                f"synthetic option '{where}.attribute': expected one of {', '.join(ATTRIBUTES)}, got {attribute!r}"
            )
        groups: tuple[str, ...] | None = None
        lo: float | None = None
        hi: float | None = None
        if attribute == "age":
            if "groups" in given:
                raise DataError(
                    f"synthetic option '{where}.groups': age rules select by 'min' (inclusive) and/or "
                    f"'max' (exclusive) in years, e.g. {{'attribute': 'age', 'min': 60}}"
                )
            if given.get("min") is not None:
                lo = _number(f"{where}.min", given["min"])
            if given.get("max") is not None:
                hi = _number(f"{where}.max", given["max"])
            if lo is None and hi is None:
                raise DataError(f"synthetic option {where}: an age rule needs 'min' and/or 'max' (years)")
            if lo is not None and hi is not None and lo >= hi:
                raise DataError(f"synthetic option {where}: expected 'min' < 'max', got {lo:g} >= {hi:g}")
        else:
            for key in ("min", "max"):
                if key in given:
                    raise DataError(
                        f"synthetic option '{where}.{key}': only age rules take a range; "
                        f"{attribute} rules take 'groups'"
                    )
            raw = given.get("groups")
            if isinstance(raw, str):
                raw = [raw]
            allowed = _CATEGORIES[attribute]
            if not isinstance(raw, (list, tuple)) or not raw:
                raise DataError(
                    f"synthetic option '{where}.groups': expected a non-empty list of {attribute} groups "
                    f"({', '.join(allowed)}), got {raw!r}"
                )
            for g in raw:
                if g not in allowed:
                    raise DataError(
                        f"synthetic option '{where}.groups': expected {attribute} groups among "
                        f"{', '.join(allowed)}, got {g!r}"
                    )
            groups = tuple(dict.fromkeys(raw))
        marker_eval = given.get("marker_eval")
        if isinstance(marker_eval, str) and marker_eval != "train":
            raise DataError(f"synthetic option '{where}.marker_eval': expected a probability, 'train' or nothing, "
                            f"got {marker_eval!r}")
        return cls(
            attribute=attribute,
            groups=groups,
            min=lo,
            max=hi,
            contrast=_number(f"{where}.contrast", given.get("contrast", 1.0), lo=0.0, hi=4.0, lo_open=True),
            noise=_number(f"{where}.noise", given.get("noise", 0.0), lo=0.0, hi=1.0),
            haze=_number(f"{where}.haze", given.get("haze", 0.0), lo=0.0, hi=1.0),
            blur=_number(f"{where}.blur", given.get("blur", 0.0), lo=0.0, hi=10.0),
            label_noise=_probability(f"{where}.label_noise", given.get("label_noise", 0.0)),
            prevalence=_number(f"{where}.prevalence", given.get("prevalence", 1.0), lo=0.0),
            marker_pos=_probability(f"{where}.marker_pos", given.get("marker_pos", 0.0)),
            marker_neg=_probability(f"{where}.marker_neg", given.get("marker_neg", 0.0)),
            marker_eval=None if marker_eval is None else "train" if marker_eval == "train"
            else _probability(f"{where}.marker_eval", marker_eval),
        )

    def to_options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attribute": self.attribute}
        if self.groups is not None:
            out["groups"] = list(self.groups)
        else:
            out["min"] = self.min
            out["max"] = self.max
        for key in _BIAS_EFFECT_KEYS:
            out[key] = getattr(self, key)
        return out

    def matches(self, attributes: Mapping[str, np.ndarray]) -> np.ndarray:
        """Boolean mask of the samples this rule selects."""
        values = attributes[self.attribute]
        if self.groups is not None:
            return np.isin(values, np.asarray(self.groups))
        mask = np.ones(values.shape, dtype=bool)
        if self.min is not None:
            mask &= values >= self.min
        if self.max is not None:
            mask &= values < self.max
        return mask


# -- the config --------------------------------------------------------------------------------------
_DEFAULT_N = {"train": 2000, "val": 500, "test": 1500}
_OPTION_KEYS = (
    "n", "image_size", "prevalence", "finding_mix", "sex_mix", "race_mix",
    "age_min", "age_max", "age_mean", "age_sd", "noise", "finding_strength",
    "incidental_rate", "anatomy_by_attribute", "bias",
)


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the synthetic generator, with its default. Build it with :meth:`from_options`.

    ``n``: samples per split. ``image_size``: side in pixels. ``prevalence``: base probability that a sample
    is abnormal; ``finding_mix``: relative weight of each finding among abnormal samples. ``sex_mix`` and
    ``race_mix``: group proportions. Age is drawn from a Beta distribution rescaled to
    [``age_min``, ``age_max``] with mean ``age_mean`` and standard deviation ``age_sd``, then rounded to whole
    years. ``noise``: base Gaussian noise sigma (intensity scale [0, 1]). ``finding_strength``: multiplies
    the opacity/size contrast of every finding (lower = harder). ``incidental_rate``: probability that a
    report also mentions an incidental, non-label detail. ``anatomy_by_attribute``: let sex and age shape
    anatomy (body size, breast shadows, inspiration, bone density, aortic unfolding). ``bias``: per-group
    :class:`BiasRule` list.
    """

    n: dict[str, int] = field(default_factory=lambda: dict(_DEFAULT_N))
    image_size: int = 128
    prevalence: float = 0.5
    finding_mix: dict[str, float] = field(default_factory=lambda: {f: 1 / len(FINDINGS) for f in FINDINGS})
    sex_mix: dict[str, float] = field(default_factory=lambda: {"F": 0.5, "M": 0.5})
    race_mix: dict[str, float] = field(default_factory=lambda: {"Asian": 0.25, "Black": 0.25, "White": 0.5})
    age_min: int = 18
    age_max: int = 95
    age_mean: float = 57.0
    age_sd: float = 17.0
    noise: float = 0.012
    finding_strength: float = 1.0
    incidental_rate: float = 0.15
    anatomy_by_attribute: bool = True
    bias: tuple[BiasRule, ...] = ()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_options(), sort_keys=True))

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> SynthConfig:
        """Validate a task card's options dict; missing keys take their defaults."""
        if options is None:
            options = {}
        given = _mapping("options", options)
        _unknown_keys("keys", given, _OPTION_KEYS)
        d = cls()
        kw: dict[str, Any] = {}

        if "n" in given:
            n = _mapping("n", given["n"])
            if not n:
                raise DataError("synthetic option 'n': expected at least one split, e.g. {'train': 2000}")
            kw["n"] = {split: _integer(f"n.{split}", count, lo=0, hi=10_000_000) for split, count in n.items()}
        if "image_size" in given:
            kw["image_size"] = _integer("image_size", given["image_size"], lo=32, hi=1024)
            if kw["image_size"] % 2:
                raise DataError(f"synthetic option 'image_size': expected an even integer, got {kw['image_size']}")
        if "prevalence" in given:
            kw["prevalence"] = _probability("prevalence", given["prevalence"])
        if "finding_mix" in given:
            kw["finding_mix"] = _mix("finding_mix", given["finding_mix"], FINDINGS)
        if "sex_mix" in given:
            kw["sex_mix"] = _mix("sex_mix", given["sex_mix"], SEXES)
        if "race_mix" in given:
            kw["race_mix"] = _mix("race_mix", given["race_mix"], RACES)
        for key in ("age_min", "age_max"):
            if key in given:
                kw[key] = _integer(key, given[key], lo=0, hi=130)
        for key in ("age_mean", "age_sd"):
            if key in given:
                kw[key] = _number(key, given[key], lo=0.0, lo_open=key == "age_sd")
        if "noise" in given:
            kw["noise"] = _number("noise", given["noise"], lo=0.0, hi=1.0)
        if "finding_strength" in given:
            kw["finding_strength"] = _number("finding_strength", given["finding_strength"], lo=0.0, hi=5.0,
                                             lo_open=True)
        if "incidental_rate" in given:
            kw["incidental_rate"] = _probability("incidental_rate", given["incidental_rate"])
        if "anatomy_by_attribute" in given:
            value = given["anatomy_by_attribute"]
            if not isinstance(value, bool):
                raise DataError(f"synthetic option 'anatomy_by_attribute': expected true or false, got {value!r}")
            kw["anatomy_by_attribute"] = value
        if "bias" in given:
            rules = given["bias"]
            if rules is None:
                rules = []
            if not isinstance(rules, (list, tuple)):
                raise DataError(f"synthetic option 'bias': expected a list of rules, got {rules!r}")
            kw["bias"] = tuple(BiasRule.from_options(rule, i) for i, rule in enumerate(rules))

        lo, hi = kw.get("age_min", d.age_min), kw.get("age_max", d.age_max)
        mean, sd = kw.get("age_mean", d.age_mean), kw.get("age_sd", d.age_sd)
        if lo >= hi:
            raise DataError(f"synthetic options 'age_min'/'age_max': expected age_min < age_max, got {lo} >= {hi}")
        if not lo < mean < hi:
            raise DataError(f"synthetic option 'age_mean': expected a value inside ({lo}, {hi}), got {mean:g}")
        # a Beta on [lo, hi] with this mean exists only if sd^2 < (mean - lo) * (hi - mean)
        if sd * sd >= (mean - lo) * (hi - mean):
            limit = math.sqrt((mean - lo) * (hi - mean))
            raise DataError(f"synthetic option 'age_sd': expected a value < {limit:.1f} for this age range "
                            f"and mean, got {sd:g}")
        return cls(**kw)

    def to_options(self) -> dict[str, Any]:
        """The canonical options dict: every key, JSON-serialisable; ``from_options`` round-trips it."""
        return {
            "n": dict(self.n),
            "image_size": self.image_size,
            "prevalence": self.prevalence,
            "finding_mix": dict(self.finding_mix),
            "sex_mix": dict(self.sex_mix),
            "race_mix": dict(self.race_mix),
            "age_min": self.age_min,
            "age_max": self.age_max,
            "age_mean": self.age_mean,
            "age_sd": self.age_sd,
            "noise": self.noise,
            "finding_strength": self.finding_strength,
            "incidental_rate": self.incidental_rate,
            "anatomy_by_attribute": self.anatomy_by_attribute,
            "bias": [rule.to_options() for rule in self.bias],
        }
