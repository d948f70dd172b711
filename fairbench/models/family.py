"""What a model family declares: how it builds, what it reads from disk, and (for generic families) how a card
is completed from the checkpoint itself.

Each family module defines one :class:`Family` (conventionally ``FAMILY``) and :data:`fairbench.models.base.FAMILIES`
registers it with one line (``FAMILIES.register_lazy("name", "fairbench.models.mod:FAMILY")``). Nothing outside
the family module knows a family's files, tokenizer or configuration: :func:`fairbench.models.inputs.resolve_inputs`
locates the weights with :attr:`Family.default_files` and then hands over to :attr:`Family.inputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from fairbench.models.base import ModelCard, VLModel
    from fairbench.models.inputs import ModelInputs
    from fairbench.models.weights import WeightsSource

__all__ = ["Family"]


def _no_inputs(inputs: ModelInputs) -> None:
    return None


@dataclass(frozen=True)
class Family:
    #: ``build(card, source, device) -> VLModel``: the family's model from a (resolved) card and a weights source
    build: Callable[[ModelCard, WeightsSource, torch.device], VLModel]
    #: weights files looked for in a ``local-dir:``/``hf-hub:`` directory when the card lists none
    #: (``weights.files``); each entry one name or alternatives separated by ``|``
    default_files: tuple[str, ...] = ()
    #: ``inputs(ModelInputs)``: fills in the tokenizer and configuration files (``inputs.weights`` and
    #: ``inputs.weights_dir`` are already located) and appends every missing piece to ``inputs.problems``
    inputs: Callable[[ModelInputs], None] = _no_inputs
    #: ``resolve_card(card, source, model_args) -> ModelCard``: a generic family completes its card from the
    #: checkpoint (architecture, preprocessing) and ``--model-arg``; None: the card is complete and takes no
    #: model arguments
    resolve_card: Callable[[ModelCard, WeightsSource, dict[str, Any]], ModelCard] | None = None
    #: ``architecture(card) -> nn.Module``: the card's bare module (no weights), built under ``torch.device("meta")``
    #: by :mod:`fairbench.models.fit` to name the cards a mismatched checkpoint fits; None: not compared
    architecture: Callable[[ModelCard], torch.nn.Module] | None = None
    #: families whose checkpoints share one key layout (``architecture`` comparable) share this name
    layout: str | None = None
