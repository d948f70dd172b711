"""robust-fair (Bansal, Wu, Wang, Hu; arXiv 2505.03153): DBPM-reweighted CLIP loss plus a Sinkhorn fairness term.

Loss per step: ``L_DBPM + lambda_fair * sum_g S_g``.

``L_DBPM`` (``dbpm``; :mod:`fairbench.train.dbpm`):

- ``pair`` (default with ``mode=paper``): DBPM as published, per training pair (by sample id): a memory of each
  pair's unweighted CLIP loss per epoch; from epoch ``warm_epochs`` on, the epoch-weighted mean of the history
  flags noisy pairs (``<= mu - beta_np sigma``) and faulty pairs (``>= mu + beta_fp sigma``), whose losses are
  multiplied by the Gaussian density at the current loss; ``L_DBPM`` is the mean over the batch.
- ``slot`` (default with ``mode=code``; the released ``finetune_RobustFairCLIP.py``): one memory value per
  batch slot (the batch-mean loss after reweighting); a slot whose plain history mean lies outside
  ``mu -/+ beta sigma`` (strict) has its batch loss multiplied by the density at that (detached) loss.

``S_g`` (``fair_term``; :mod:`fairbench.train.fair`):

- ``loss`` (default with ``mode=paper``; the paper's description): Sinkhorn divergence between the
  per-sample losses (after DBPM reweighting) of the whole batch and those of group ``g``'s samples in the
  batch, for each group present; gradient through both sides.
- ``similarity`` (default with ``mode=code``): FairCLIP's released term unchanged (extra per-group batches,
  ``diag(L @ L)``, group side normalised and without gradient).

``lambda_fair`` ``auto``: 1 for the ``loss`` term (the paper gives no value; 1 is the term's natural unit, see
:mod:`fairbench.train.fair`), 1e-7 for the ``similarity`` term (the released script's value, tuned for that
term's 1e5-1e9 magnitude). ``beta_np``/``beta_fp`` ``auto``: 2 and 3 (DBPM paper) for ``pair``; 3 and 3 for
``slot`` (released). ``warm_epochs`` ``auto``: for ``pair`` DBPM's own share of the schedule, 50 of 80 epochs
(``config/config_ecg.yaml``), i.e. ``max(1, round(0.625 * epochs))``; for ``slot`` 1 (the released script
reweights from ``epoch > 0``). The optimiser, schedule and trained parameters are the released script's (as
``fairclip``). Every epoch's DBPM decision (mu, sigma, thresholds and the sample ids of the noisy and faulty
pairs, or the bad slots and the pairs in them) is logged and recorded in metrics.json
(``adapt.fitted.dbpm``); the per-epoch record (``adapt.fitted.epochs``) has the unweighted and reweighted CLIP
loss, the term, ``lambda * term``, the gradient ratio, the number of flagged pairs (or slots) and the mean
weight DBPM gave the losses it reweighted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fairbench.adapters._trainable import TrainableAdapter, check_trainable, resolve_attribute
from fairbench.adapters.base import AdaptContext
from fairbench.adapters.fairclip import FAIRCLIP_DEFAULTS, FairTermObjective, GroupScores, check_group_bn, check_lambda
from fairbench.errors import FairbenchError
from fairbench.progress import info
from fairbench.train import dist
from fairbench.train.dbpm import DBPM_VARIANTS, EpochFlags, PairMemory, SlotMemory, gaussian_pdf, reweight
from fairbench.train.fair import FAIR_MODES, fairclip_term, loss_distribution_term, pair_scores
from fairbench.train.towers import select_trainable

__all__ = ["FAIR_TERMS", "RobustFair", "RobustFairObjective", "resolve_robust_params"]

FAIR_TERMS = ("loss", "similarity")
#: lambda_fair=auto per fairness term (see the module docstring)
AUTO_LAMBDA = {"loss": 1.0, "similarity": 1e-7}
#: DBPM's warm-up as a share of its schedule: warm_epochs 50 of max_epochs 80 (config/config_ecg.yaml)
DBPM_WARM_SHARE = 50 / 80
#: sample ids recorded per epoch and kind at most (counts are always complete)
MAX_IDS = 10_000


def _auto_float(adapter: str, key: str, value: Any, auto: float) -> float:
    if _is_auto(value):
        return auto
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise FairbenchError(f"adapter '{adapter}': parameter '{key}' must be 'auto' or a number, "
                             f"got {value!r}") from None
    if out < 0:
        raise FairbenchError(f"adapter '{adapter}': parameter '{key}' must be >= 0, got {value!r}")
    return out


def resolve_robust_params(params: dict[str, Any]) -> dict[str, Any]:
    """``mode`` presets and ``auto`` values resolved: dbpm, fair_term, warm_epochs, lambda_fair, beta_np,
    beta_fp."""
    mode = params["mode"]
    if mode not in FAIR_MODES:
        raise FairbenchError(f"adapter 'robust_fair': mode must be one of {', '.join(FAIR_MODES)}, got {mode!r}")
    dbpm = {"auto": "pair" if mode == "paper" else "slot"}.get(params["dbpm"], params["dbpm"])
    term = {"auto": "loss" if mode == "paper" else "similarity"}.get(params["fair_term"], params["fair_term"])
    if dbpm not in DBPM_VARIANTS:
        raise FairbenchError(f"adapter 'robust_fair': dbpm must be auto or one of {', '.join(DBPM_VARIANTS)}, "
                             f"got {dbpm!r}")
    if term not in FAIR_TERMS:
        raise FairbenchError(f"adapter 'robust_fair': fair_term must be auto or one of {', '.join(FAIR_TERMS)}, "
                             f"got {term!r}")
    if _is_auto(params["warm_epochs"]):
        warm = max(1, round(DBPM_WARM_SHARE * int(params["epochs"]))) if dbpm == "pair" else 1
    else:
        try:
            warm = int(params["warm_epochs"])
        except (TypeError, ValueError):
            raise FairbenchError(f"adapter 'robust_fair': warm_epochs must be 'auto' or a whole number, "
                                 f"got {params['warm_epochs']!r}") from None
    if warm < 1:
        raise FairbenchError(f"adapter 'robust_fair': warm_epochs must be at least 1 (DBPM needs a loss history), "
                             f"got {warm}")
    lam = AUTO_LAMBDA[term] if _is_auto(params["lambda_fair"]) else check_lambda("robust_fair", params["lambda_fair"])
    return {"dbpm": dbpm, "fair_term": term, "warm_epochs": warm, "lambda_fair": lam,
            "beta_np": _auto_float("robust_fair", "beta_np", params["beta_np"], 2.0 if dbpm == "pair" else 3.0),
            "beta_fp": _auto_float("robust_fair", "beta_fp", params["beta_fp"], 3.0)}


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


class RobustFairObjective(FairTermObjective):
    label = "robust_fair"

    def __init__(self, ctx: AdaptContext, model: Any, params: dict[str, Any], resolved: dict[str, Any],
                 attribute: str, *, adapter: str) -> None:
        super().__init__(ctx, model, params, attribute, float(resolved["lambda_fair"]), adapter=adapter)
        self.r = resolved
        self.epochs = int(params["epochs"])
        train = self.samples["train"]
        self.groups_of = np.asarray(train.attributes[attribute], dtype=object)
        self.ids = np.asarray(train.sample_ids).astype(str)
        self.group_scores = GroupScores(self, attribute, int(params["fair_batch_size"]), ctx.seed,
                                        str(params["group_bn"])) if resolved["fair_term"] == "similarity" else None
        self.pairs = PairMemory(self.n_train, self.epochs) if resolved["dbpm"] == "pair" else None
        self.slots: SlotMemory | None = None
        self.flags: EpochFlags | None = None
        self.batches: list[np.ndarray] = []
        self.log: list[dict[str, Any]] = []
        self._weights: list[float] = []

    # -- DBPM decisions per epoch ------------------------------------------------------------------
    def begin_epoch(self, epoch: int, batches: list[np.ndarray]) -> None:
        if self.group_scores is not None:
            self.group_scores.draws.begin_epoch(epoch)
        self.batches = batches
        self.reset_stats()
        self._weights = []
        if self.pairs is None and self.slots is None:
            self.slots = SlotMemory(len(batches), self.epochs)
        self.flags = None
        if epoch < self.r["warm_epochs"]:
            return
        if self.pairs is not None:
            self.flags = self.pairs.flags(epoch, self.r["beta_np"], self.r["beta_fp"])
            entry = self._entry(self.flags)
            entry.update(self._ids("noisy", self.flags.noisy), **self._ids("faulty", self.flags.faulty))
        else:
            assert self.slots is not None
            self.flags = self.slots.flags(epoch, self.r["beta_np"], self.r["beta_fp"])
            entry = self._entry(self.flags)
            bad = torch.nonzero(self.flags.bad).flatten().tolist()
            entry["bad_slots"] = bad
            entry["n_bad_slots"] = len(bad)
            entry["pairs_in_bad_slots"] = [str(i) for s in bad for i in self.ids[batches[s]]][:MAX_IDS]
        self.log.append(entry)
        counts = {k: v for k, v in entry.items() if k.startswith("n_")}
        info(f"robust_fair epoch {epoch + 1}: DBPM ({self.r['dbpm']}) mu {self.flags.mu:.4g} sigma "
             f"{self.flags.sigma:.4g}; " + ", ".join(f"{k[2:]} {v}" for k, v in counts.items()))

    @staticmethod
    def _entry(flags: EpochFlags) -> dict[str, Any]:
        return {"epoch": flags.epoch, "mu": flags.mu, "sigma": flags.sigma, "low": flags.extra["low"],
                "high": flags.extra["high"]}

    def _ids(self, kind: str, mask: torch.Tensor) -> dict[str, Any]:
        where = torch.nonzero(mask).flatten().numpy()
        return {f"n_{kind}": int(len(where)), kind: [str(i) for i in self.ids[where][:MAX_IDS]]}

    # -- the loss ---------------------------------------------------------------------------------
    def batch_loss(self, idx: np.ndarray, epoch: int, step: int) -> torch.Tensor:
        logits, cosine = self.similarities(*self.embed(idx, epoch))
        per = self.per_sample_loss(logits)
        flags = self.flags
        if self.pairs is not None:
            for ids, losses in dist.all_gather_objects((idx.tolist(), per.detach().cpu().tolist())):
                self.pairs.record(torch.tensor(ids), torch.tensor(losses), epoch)
            weighted = per
            if flags is not None:
                bad = flags.bad[torch.from_numpy(idx)]
                weighted, weights = reweight(per, bad, flags.mu, flags.sigma)
                self._weights += weights[bad.to(per.device)].tolist()
            clip = weighted.mean()
        else:
            assert self.slots is not None
            clip = per.mean()
            w = torch.ones((), device=per.device)
            if flags is not None and bool(flags.bad[step]):
                w = gaussian_pdf(clip.detach(), flags.mu, flags.sigma).to(per.dtype)
                self._weights.append(float(w))
            clip = clip * w
            weighted = per * w
            value = float(np.mean(dist.all_gather_objects(float(clip.detach()))))
            self.slots.record(step, value, epoch)
        return self.combine(clip, lambda: self._term(weighted, logits, cosine, idx, epoch), step,
                            unweighted=per.mean())

    def _term(self, weighted: torch.Tensor, logits: torch.Tensor, cosine: torch.Tensor, idx: np.ndarray,
              epoch: int) -> torch.Tensor:
        if self.r["fair_term"] == "loss":
            fair, _ = loss_distribution_term(weighted, list(self.groups_of[idx]), blur=self.blur, scaling=self.scaling)
            return fair
        assert self.group_scores is not None
        return fairclip_term("code", pair_scores(logits, cosine, "code"), self.group_scores.scores("code", epoch),
                             blur=self.blur, scaling=self.scaling)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        out = super().end_epoch(epoch)
        out["dbpm_loss"] = float(np.mean(self._stats["base"]))
        entry = self.log[-1] if self.log and self.log[-1]["epoch"] == epoch else {}
        counts = {k: v for k, v in entry.items() if k.startswith("n_")}
        out.update(counts)
        out["n_flagged"] = counts.get("n_bad_slots", counts.get("n_noisy", 0) + counts.get("n_faulty", 0))
        out["n_reweighted"] = len(self._weights)
        out["mean_weight"] = float(np.mean(self._weights)) if self._weights else None
        return out

    # -- checkpointed state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        memory = self.pairs if self.pairs is not None else self.slots
        return {"memory": memory.state_dict() if memory is not None else None, "log": list(self.log)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log = list(state["log"])
        if state["memory"] is None:
            return
        if self.pairs is not None:
            self.pairs.load_state_dict(state["memory"])
        else:
            n_slots = state["memory"]["losses"].shape[0]
            self.slots = SlotMemory(n_slots, self.epochs)
            self.slots.load_state_dict(state["memory"])

    def record(self) -> dict[str, Any]:
        return {**super().record(),
                "dbpm": {"variant": self.r["dbpm"], "beta_np": self.r["beta_np"], "beta_fp": self.r["beta_fp"],
                         "warm_epochs": self.r["warm_epochs"], "max_epochs": self.epochs, "epochs": self.log},
                "fair_term": self.r["fair_term"]}


class RobustFair(TrainableAdapter):
    name = "robust_fair"
    description = ("robust-fair: DBPM-reweighted CLIP loss (per pair, or the released batch-slot variant) + "
                   "Sinkhorn term on group loss distributions (or FairCLIP's similarity term)")
    defaults = {**FAIRCLIP_DEFAULTS, "mode": "paper", "dbpm": "auto", "fair_term": "auto", "beta_np": "auto",
                "beta_fp": "auto", "warm_epochs": "auto", "lambda_fair": "auto"}

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.resolved = resolve_robust_params(self.params)
        check_trainable(self.name, self.params["trainable"])
        check_group_bn(self.name, self.params["group_bn"])

    def build_objective(self, ctx: AdaptContext) -> RobustFairObjective:
        attribute = resolve_attribute(ctx, self.name, str(self.params["attribute"]))
        if self.resolved["warm_epochs"] >= int(self.params["epochs"]):
            info(f"robust_fair: warm_epochs {self.resolved['warm_epochs']} >= epochs {self.params['epochs']}: DBPM "
                 f"never reweights in this run")
        self.fitted["parameters"] = select_trainable(ctx.model, str(self.params["trainable"]))
        self.fitted["resolved"] = dict(self.resolved)
        return RobustFairObjective(ctx, ctx.model, self.params, self.resolved, attribute, adapter=self.name)
