"""The Sinkhorn fairness terms against direct geomloss and POT computations, and where their gradient flows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairbench.train.fair import fairclip_term, loss_distribution_term, pair_scores, sinkhorn_divergence


def _geomloss(x: torch.Tensor, y: torch.Tensor, blur: float, scaling: float = 0.5) -> torch.Tensor:
    from geomloss import SamplesLoss

    return SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=True)(x.reshape(-1, 1), y.reshape(-1, 1))


def _pot_divergence(x: np.ndarray, y: np.ndarray, eps: float) -> float:
    """S = OT(x, y) - OT(x, x)/2 - OT(y, y)/2 with OT the entropic cost <C, P> + eps KL(P | a b^T), cost
    |x - y|^2 / 2, converged in the log domain."""
    ot = pytest.importorskip("ot")

    def ot_eps(p: np.ndarray, q: np.ndarray) -> float:
        a, b = np.full(len(p), 1 / len(p)), np.full(len(q), 1 / len(q))
        cost = 0.5 * (p[:, None] - q[None, :]) ** 2
        plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
        return float((cost * plan).sum() + eps * (plan * np.log(plan / np.outer(a, b))).sum())

    return ot_eps(x, y) - 0.5 * ot_eps(x, x) - 0.5 * ot_eps(y, y)


def test_sinkhorn_matches_geomloss_and_pot() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, 12), rng.normal(0.7, 1.3, 9)
    tx, ty = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    ours = sinkhorn_divergence(tx, ty, blur=1e-4)
    assert float(ours) == float(_geomloss(tx, ty, 1e-4))  # the released FairCLIP call, bit for bit
    # against POT where geomloss' epsilon-scaling converges (blur 1 = epsilon 1)
    pot = _pot_divergence(x, y, eps=1.0)
    assert float(sinkhorn_divergence(tx, ty, blur=1.0, scaling=0.99)) == pytest.approx(pot, rel=1e-4)
    assert float(sinkhorn_divergence(tx, ty, blur=1.0)) == pytest.approx(pot, rel=1e-3)
    assert float(sinkhorn_divergence(tx, tx, blur=1.0)) == pytest.approx(0.0, abs=1e-6)  # debiased


def _pairs(seed: int, n: int, requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 8, generator=g).requires_grad_(requires_grad)
    txt = torch.randn(n, 8, generator=g).requires_grad_(requires_grad)
    return img, txt


def _logits(img: torch.Tensor, txt: torch.Tensor, scale: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    cosine = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    return scale * cosine, cosine


def test_code_mode_term_matches_the_released_computation_and_stops_group_gradients() -> None:
    img, txt = _pairs(0, 6)
    groups = [_pairs(1, 4), _pairs(2, 5)]
    logits, cosine = _logits(img, txt)
    batch = pair_scores(logits, cosine, "code")
    # diag(logits_per_image @ logits_per_text.T) with logits_per_text = L^T: sum_k L_jk L_kj
    assert batch.detach().tolist() == pytest.approx(torch.einsum("jk,kj->j", logits, logits).detach().tolist(),
                                                    rel=1e-5)
    group_scores = [pair_scores(*_logits(gi, gt), "code") for gi, gt in groups]
    term = fairclip_term("code", batch, group_scores, blur=1e-4)
    expected = sum(_geomloss(batch, (s / s.sum()).detach(), 1e-4) for s in group_scores)
    assert float(term.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    term.backward()
    assert img.grad is not None and img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0
    for gi, gt in groups:  # one-sided: no gradient reaches the group batches
        assert gi.grad is None and gt.grad is None


def test_paper_mode_term_uses_cosines_on_both_sides_with_gradients() -> None:
    img, txt = _pairs(0, 6)
    groups = [_pairs(1, 4), _pairs(2, 5)]
    logits, cosine = _logits(img, txt)
    batch = pair_scores(logits, cosine, "paper")
    assert batch.detach().tolist() == pytest.approx(F.cosine_similarity(img, txt).detach().tolist(), rel=1e-5)
    group_scores = [pair_scores(*_logits(gi, gt), "paper") for gi, gt in groups]
    term = fairclip_term("paper", batch, group_scores, blur=1e-4)
    expected = sum(_geomloss(batch.detach(), s.detach(), 1e-4) for s in group_scores)  # no normalisation
    assert float(term.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    term.backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    for gi, gt in groups:
        assert gi.grad is not None and gi.grad.abs().sum() > 0 and gt.grad.abs().sum() > 0


def test_loss_distribution_term_compares_each_group_with_the_batch() -> None:
    per = torch.tensor([0.5, 1.0, 2.0, 0.2, 3.0, 1.5], requires_grad=True)
    groups = ["A", "B", "A", None, "B", "A"]  # None: unknown, in no group
    term, sizes = loss_distribution_term(per, groups, blur=1e-2)
    assert sizes == {"A": 3, "B": 2}
    values = per.detach()
    expected = _geomloss(values, values[[0, 2, 5]], 1e-2) + _geomloss(values, values[[1, 4]], 1e-2)
    assert float(term.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    term.backward()
    assert per.grad is not None and per.grad.abs().sum() > 0


def _matched(seed: int, n: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text embeddings whose matched pairs agree more (small ``noise``) or less."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 16, generator=g)
    return img, img + noise * torch.randn(n, 16, generator=g)


def test_released_term_is_group_blind_and_paper_term_is_not() -> None:
    from fairbench.train.fair import fairclip_code_closed_form

    logits, cosine = _logits(*_matched(0, 32, 0.5))
    group_sets = {
        "like the batch": [_matched(1, 32, 0.5), _matched(2, 32, 0.5)],
        "far worse pairs": [_matched(3, 32, 3.0), _matched(4, 32, 5.0)],
        "a different size": [_matched(5, 8, 0.1), _matched(6, 20, 1.0)],
    }
    values: dict[str, dict[str, float]] = {"code": {}, "paper": {}}
    for mode in values:
        batch = pair_scores(logits, cosine, mode)
        for name, groups in group_sets.items():
            scores = [pair_scores(*_logits(i, t), mode) for i, t in groups]
            values[mode][name] = float(fairclip_term(mode, batch, scores, blur=1e-4))
        # scores that are no similarity at all: a constant per group
        values[mode]["constant"] = float(fairclip_term(mode, batch, [torch.full((32,), 7.0)] * 2, blur=1e-4))
    code = values["code"]
    closed = fairclip_code_closed_form(pair_scores(logits, cosine, "code"), n_groups=2)
    assert closed > 1e8
    for name, v in code.items():  # whatever the group batches hold, the released term is n_groups * mean(s^2) / 2
        assert v == pytest.approx(closed, rel=1e-4), name
    paper = values["paper"]
    assert paper["far worse pairs"] > 100 * paper["like the batch"]
    assert paper["constant"] > 10 * paper["far worse pairs"]


def test_gradient_share_is_the_ratio_of_the_two_parameter_gradient_norms() -> None:
    from fairbench.train.fair import gradient_share

    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    v = torch.tensor([3.0], requires_grad=True)
    frozen = torch.tensor([4.0])  # not among the parameters: its gradient must not count
    base = (w ** 2).sum() + 2 * v.sum()  # grad: (2w, 2)
    extra = 0.1 * (w.sum() * frozen).sum()  # grad: (0.4, 0.4, 0.4, 0)
    share = gradient_share(base, extra, [w, v])
    assert share.base == pytest.approx(float(torch.sqrt((2 * w.detach()).pow(2).sum() + 4)))
    assert share.extra == pytest.approx(float(np.sqrt(3 * 0.4 ** 2)))
    assert share.ratio == pytest.approx(share.extra / share.base)
    (base + extra).backward()  # the graph is kept for the training step's own backward
    assert w.grad is not None and w.grad.tolist() == pytest.approx([2.4, -3.6, 1.4])
    # no term (lambda 0) or a term without gradient: zero share
    assert gradient_share((w ** 2).sum(), None, [w]).extra == 0.0
    assert gradient_share((w ** 2).sum(), torch.tensor(5.0), [w]).ratio == 0.0
