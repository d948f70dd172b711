"""Everything a model needs on disk besides its card: weights, tokenizer, configuration files.

:func:`resolve_inputs` finds them for a card and a weights source without building anything, and collects every
missing piece instead of stopping at the first, so that a run can say in one message all that is missing
(:func:`check_run_inputs` adds ``--data-root``). The family builders take their paths from it, so what the
check finds is what the build reads.

Where the weights are: the source's file, or the card's ``weights.files`` (else the family's
``default_files``) in a ``local-dir:``/``hf-hub:`` directory (nothing for ``random`` and ``pretrain:``). The
tokenizer and configuration files are each family's own (:attr:`fairbench.models.family.Family.inputs`, defined
in the family's module beside its build); this module only provides the shared helpers (:func:`locate_aux`,
:func:`weights_dir_holds`, :func:`vocab_tokenizer_inputs`). ``--weights random`` replaces only the weights: the
tokenizer (and any configuration the card reads from its source) still come from their source, usually the
local Hugging Face cache.

:meth:`ModelInputs.info` hashes the tokenizer files and the configuration file and records the Hugging Face
snapshot (revision) each came from; metrics.json keeps it under ``model.weights`` and the stale-cell check
compares it (:func:`inputs_changes`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairbench.errors import DataError, FairbenchError, WeightsError
from fairbench.models.weights import WeightsSource, find_in_dir, locate, parse_weights, sha256_file

if TYPE_CHECKING:
    from fairbench.models.base import ModelCard

__all__ = [
    "INSTEAD",
    "TOKENIZER_FILES",
    "ModelInputs",
    "check_run_inputs",
    "inputs_changes",
    "inputs_digest",
    "locate_aux",
    "resolve_inputs",
    "vocab_tokenizer_inputs",
    "weights_dir_holds",
]

#: the files a tokenizer directory may hold that decide how text is tokenised (those present are hashed)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")

@dataclass
class ModelInputs:
    card: ModelCard
    source: WeightsSource
    #: the weights file, or the directory of a directory layout (None: random, pretrain, or missing)
    weights: Path | None = None
    #: ``weights`` when it is a directory layout
    weights_dir: Path | None = None
    #: a tokenizer directory, or a vocabulary file (open_clip's BPE)
    tokenizer: Path | None = None
    tokenizer_source: str = ""
    #: a configuration file read besides the card (open_clip_config.json, BLIP-2's config.json)
    config: Path | None = None
    #: an image preprocessing configuration read besides the card (a transformers preprocessor_config.json)
    preprocessor: Path | None = None
    problems: list[str] = field(default_factory=list)

    def raise_if_missing(self) -> None:
        if self.problems:
            raise WeightsError(join_problems(self.problems))

    def info(self) -> dict[str, Any]:
        """The tokenizer and configuration files' sha256 and the Hugging Face revisions, for ``weights_info``."""
        out: dict[str, Any] = {}
        rev = hub_revision(self.weights) if self.weights is not None else None
        if rev:
            out["revision"] = rev
        if self.tokenizer is not None:
            files = tokenizer_files(self.tokenizer)
            hashes = {f.name: sha256_file(f) for f in files}
            tok: dict[str, Any] = {"source": self.tokenizer_source, "files": hashes,
                                   "sha256": _digest(hashes)}
            if hub_revision(self.tokenizer):
                tok["revision"] = hub_revision(self.tokenizer)
            out["tokenizer"] = tok
        if self.config is not None:
            cfg: dict[str, Any] = {"file": self.config.name, "sha256": sha256_file(self.config)}
            if hub_revision(self.config):
                cfg["revision"] = hub_revision(self.config)
            out["config"] = cfg
        if self.preprocessor is not None:
            pre: dict[str, Any] = {"file": self.preprocessor.name, "sha256": sha256_file(self.preprocessor)}
            if hub_revision(self.preprocessor):
                pre["revision"] = hub_revision(self.preprocessor)
            out["preprocessor"] = pre
        return out


def join_problems(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} things are missing: " + " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))


def _digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(hashes.items())).encode()).hexdigest()


def tokenizer_files(location: Path) -> list[Path]:
    if location.is_file():
        return [location]
    return [location / f for f in TOKENIZER_FILES if (location / f).is_file()]


def hub_revision(path: Path) -> str | None:
    """The commit of the Hugging Face cache snapshot ``path`` lies in (``.../snapshots/<commit>/...``)."""
    p = Path(path)
    for parent in [p, *p.parents]:
        if parent.parent.name == "snapshots":
            return parent.name
    return None


def _attempt(inputs: ModelInputs, fn: Any) -> Any:
    try:
        return fn()
    except FairbenchError as exc:
        inputs.problems.append(str(exc))
        return None


def _random_note(source: WeightsSource) -> str:
    return "--weights random replaces only the weights; " if source.scheme == "random" else ""


def locate_aux(inputs: ModelInputs, spec: str, files: tuple[str, ...], what: str, *, instead: str) -> Path | None:
    """A tokenizer or config source; with ``--weights random`` the message says that it is still needed (and
    no weights directory is there to hold it instead)."""
    card, source = inputs.card, inputs.source
    obtain = str(card.options.get("tokenizer_obtain", "")) if what == "tokenizer" else ""
    if source.scheme == "random":
        instead = ""

    def find() -> Path:
        try:
            return locate(parse_weights(spec), card=card, files=files, what=what, obtain=obtain, instead=instead)
        except WeightsError as exc:
            raise WeightsError(f"{_random_note(source)}{exc}") from None

    return _attempt(inputs, find)


def weights_dir_holds(directory: Path | None, entries: tuple[str, ...]) -> bool:
    return directory is not None and all(find_in_dir(directory, e) for e in entries)


def resolve_inputs(card: ModelCard, source: WeightsSource | str | None) -> ModelInputs:
    """What ``card`` with ``source`` (None: the card's) reads from disk; every missing piece in ``problems``.

    The weights are located here (the card's ``weights.files``, else the family's ``default_files``); the
    tokenizer and configuration files are the family's own business (:attr:`Family.inputs`)."""
    from fairbench.models.base import FAMILIES

    if source is None or isinstance(source, str):
        source = parse_weights(source or card.weights_source)
    inputs = ModelInputs(card, source)
    family = FAMILIES.get(card.family)
    files = tuple(card.weights_files) or family.default_files
    if source.scheme in ("file", "local-dir", "hf-hub"):
        inputs.weights = _attempt(inputs, lambda: locate(source, card=card, files=files))
        if inputs.weights is not None and inputs.weights.is_dir():
            inputs.weights_dir = inputs.weights
    family.inputs(inputs)
    return inputs


#: how a missing tokenizer or configuration file may be supplied besides its source
INSTEAD = "or put them in the weights directory given as --weights local-dir:PATH"


def vocab_tokenizer_inputs(inputs: ModelInputs) -> None:
    """A BERT word-piece tokenizer (``vocab.txt``): in the weights directory, else the card's
    ``weights.tokenizer`` source (``tiny``: the test vocabulary). Used by families whose checkpoint is a bare
    state dict beside a BERT text tower (MedCLIP, GLoRIA)."""
    from fairbench.models.tiny import tiny_vocab_dir

    card, wdir = inputs.card, inputs.weights_dir
    if weights_dir_holds(wdir, ("vocab.txt",)):
        inputs.tokenizer, inputs.tokenizer_source = wdir, inputs.source.describe()
    elif card.tokenizer_source == "tiny":
        inputs.tokenizer, inputs.tokenizer_source = tiny_vocab_dir(), "tiny"
    elif card.tokenizer_source:
        found = locate_aux(inputs, card.tokenizer_source, ("vocab.txt",), "tokenizer", instead=INSTEAD)
        inputs.tokenizer = found.parent if found is not None and found.is_file() else found
        inputs.tokenizer_source = card.tokenizer_source
    else:
        inputs.problems.append(f"{card.path}: field 'weights.tokenizer' is required (the tokenizer is not "
                               f"inside the weights)")


def check_run_inputs(card: ModelCard, weights: str | None, *, task: Any = None, loader: Any = None,
                     data_root: Path | None = None) -> ModelInputs:
    """Before any heavy work: everything the run will read (weights, tokenizer, configuration, and
    ``--data-root`` for a task on a real dataset), every missing piece in one message: a :class:`WeightsError`
    when a model input is missing, a :class:`DataError` when only the data is."""
    try:
        inputs = resolve_inputs(card, weights)
    except FairbenchError as exc:  # an unparsable source
        raise WeightsError(str(exc)) from None
    problems = list(inputs.problems)
    n_model = len(problems)
    if task is not None:
        loader = loader if loader is not None else task.loader()
        if getattr(loader, "needs_data_root", False) and data_root is None:
            problems.append(f"task '{task.name}' reads a real dataset: pass --data-root pointing at the dataset "
                            f"folder (see tasks/{task.name}/README.md)")
        elif getattr(loader, "needs_data_root", False) and data_root is not None and not Path(data_root).is_dir():
            problems.append(f"--data-root {data_root}: not a directory")
        elif getattr(loader, "needs_data_root", False) and data_root is not None:
            problem = check_data_root(loader, Path(data_root))
            if problem:
                problems.append(problem)
    if problems:
        raise (WeightsError if n_model else DataError)(join_problems(problems))
    return inputs


def check_data_root(loader: Any, data_root: Path, *, max_children: int = 64) -> str | None:
    """The loader's layout check of ``--data-root`` (``check_root``: the same files ``load`` looks for, a folder
    one or two levels too deep named by the loader itself), run before the model is built; when the root is one
    level too shallow, the message names the subfolder that holds the dataset. None when the layout is right or
    the loader has no check."""
    check = getattr(getattr(loader, "inner", loader), "check_root", None)
    if check is None:
        return None
    try:
        check(data_root)
    except DataError as exc:
        children = sorted(p for p in data_root.iterdir() if p.is_dir())[:max_children]
        for child in children:
            try:
                check(child)
            except (DataError, OSError):
                continue
            return f"--data-root {data_root} is the folder above the dataset: pass --data-root {child}"
        return str(exc)
    return None


def inputs_changes(recorded: dict[str, Any], card: ModelCard, weights: str | None) -> str | None:
    """How the tokenizer, configuration file or Hugging Face revision the run would read now differ from those
    ``recorded`` (a metrics.json ``model.weights``); None when they agree, when nothing was recorded, or when
    they cannot be resolved now (the run itself reports that)."""
    if not any(k in recorded for k in ("tokenizer", "config", "preprocessor", "revision")):
        return None
    try:
        inputs = resolve_inputs(card, weights)
        if inputs.problems:
            return None
        now = inputs.info()
    except (FairbenchError, OSError):
        return None
    for key, label in (("tokenizer", "tokenizer files"), ("config", "configuration file"),
                       ("preprocessor", "image preprocessing file")):
        old, new = (recorded.get(key) or {}).get("sha256"), (now.get(key) or {}).get("sha256")
        if old != new:
            return f"other {label} (sha256 {str(old)[:12]}, now {str(new)[:12]})"
    if recorded.get("revision") != now.get("revision"):
        return f"another Hugging Face revision of the weights ({recorded.get('revision')}, now {now.get('revision')})"
    return None


def inputs_digest(weights_info: dict[str, Any]) -> str | None:
    """One sha256 over the tokenizer, configuration and revision entries of ``weights_info`` (for
    ``config_sha256``); None when there are none."""
    parts = {k: weights_info[k] for k in ("tokenizer", "config", "preprocessor", "revision") if k in weights_info}
    if not parts:
        return None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
