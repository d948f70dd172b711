"""DBPM statistics, flags and reweighting against hand-computed values on constructed loss histories."""

from __future__ import annotations

import math

import pytest
import torch

from fairbench.train.dbpm import (
    PairMemory,
    SlotMemory,
    epoch_weighted_mean,
    gaussian_pdf,
    pair_flags,
    population_stats,
    reweight,
    slot_flags,
)


def test_epoch_weighted_mean_by_hand() -> None:
    # E = 5 epochs in the run, e = 3 recorded: weights (t+1)/E = 0.2, 0.4, 0.6, then divided by e = 3
    history = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 1.0]])
    m = epoch_weighted_mean(history, max_epochs=5)
    assert m.tolist() == pytest.approx([(0.2 * 1 + 0.4 * 2 + 0.6 * 3) / 3, (0.2 * 3 + 0.0 + 0.6 * 1) / 3])
    assert m.tolist() == pytest.approx([2.8 / 3, 0.4])


def _memory() -> PairMemory:
    """20 pairs, 3 recorded epochs of a 5-epoch run: 18 pairs lose 5.0 every epoch, pair 18 loses 0.0 (too easy:
    noisy), pair 19 loses 12.0 (too hard: faulty)."""
    memory = PairMemory(20, max_epochs=5)
    c = torch.tensor([5.0] * 18 + [0.0, 12.0])
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1))  # recorded in shuffled batches
    for epoch in range(3):
        for batch in order.split(7):
            memory.record(batch, c[batch], epoch)
    return memory


def test_pair_statistics_and_flags_by_hand() -> None:
    flags = _memory().flags(epoch=3, beta_np=2.0, beta_fp=3.0)
    # m_i = c_i * (0.2 + 0.4 + 0.6) / 3 = 0.4 c_i; mean c = 102 / 20 = 5.1, population var c = 73.8 / 20 = 3.69
    assert flags.mu == pytest.approx(0.4 * 5.1)
    assert flags.sigma == pytest.approx(0.4 * math.sqrt(3.69))
    # z(pair 18) = -5.1 / 1.92094 = -2.655 <= -2: noisy; z(pair 19) = 6.9 / 1.92094 = 3.592 >= 3: faulty
    assert torch.nonzero(flags.noisy).flatten().tolist() == [18]
    assert torch.nonzero(flags.faulty).flatten().tolist() == [19]
    assert flags.extra["low"] == pytest.approx(0.4 * (5.1 - 2 * math.sqrt(3.69)))
    # stricter thresholds flag nothing: z = -2.655 > -3, 3.592 < 4
    strict = _memory().flags(epoch=3, beta_np=3.0, beta_fp=4.0)
    assert not strict.noisy.any() and not strict.faulty.any()


def test_flags_use_only_the_history_before_the_epoch() -> None:
    memory = _memory()
    memory.record(torch.arange(20), torch.full((20,), 100.0), epoch=3)  # epoch 3's own losses do not count
    assert memory.flags(epoch=3, beta_np=2.0, beta_fp=3.0).mu == pytest.approx(0.4 * 5.1)


def test_pair_thresholds_are_inclusive_and_slot_thresholds_strict() -> None:
    values = torch.tensor([-1.0, 1.0])
    mu, sigma = population_stats(values)
    assert (mu, sigma) == (0.0, 1.0)
    noisy, faulty = pair_flags(values, mu, sigma, 1.0, 1.0)
    assert noisy.tolist() == [True, False] and faulty.tolist() == [False, True]
    assert slot_flags(values, mu, sigma, 1.0, 1.0).tolist() == [False, False]
    # equal values: sigma 0 flags nothing (instead of flagging everyone)
    same = torch.full((4,), 2.0)
    assert not any(t.any() for t in pair_flags(same, 2.0, 0.0, 2.0, 3.0))


def test_gaussian_pdf_is_not_bounded_by_one() -> None:
    assert float(gaussian_pdf(0.3, 0.3, 0.1)) == pytest.approx(1 / (0.1 * math.sqrt(2 * math.pi)))
    assert float(gaussian_pdf(0.3, 0.3, 0.1)) > 1
    assert float(gaussian_pdf(1.0, 0.0, 2.0)) == pytest.approx(math.exp(-1 / 8) / (2 * math.sqrt(2 * math.pi)))


def test_reweight_touches_flagged_pairs_only_and_detaches_the_density() -> None:
    per = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    bad = torch.tensor([False, True, False])
    out, weights = reweight(per, bad, mu=2.5, sigma=0.5)
    phi = math.exp(-0.25 / 0.5) / (0.5 * math.sqrt(2 * math.pi))
    assert weights.tolist() == pytest.approx([1.0, phi, 1.0])
    assert out.tolist() == pytest.approx([1.0, 2.0 * phi, 3.0])
    out.sum().backward()
    assert per.grad.tolist() == pytest.approx([1.0, phi, 1.0])  # d(l * phi(detached l)) / dl = phi


def test_slot_memory_plain_mean_and_bad_slots() -> None:
    memory = SlotMemory(n_slots=10, max_epochs=4)
    for epoch in range(2):
        for slot in range(10):
            memory.record(slot, 1.0 if slot < 9 else 3.0 + epoch, epoch)  # slot 9: 3, then 4 (mean 3.5)
    flags = memory.flags(epoch=2, beta_low=2.0, beta_high=2.0)
    # h = [1]*9 + [3.5]: mu = 1.25, population sigma = sqrt((9 * 0.0625 + 5.0625) / 10) = 0.75
    assert flags.mu == pytest.approx(1.25) and flags.sigma == pytest.approx(0.75)
    assert torch.nonzero(flags.bad).flatten().tolist() == [9]  # 3.5 > 1.25 + 1.5
    assert torch.nonzero(flags.faulty).flatten().tolist() == [9] and not flags.noisy.any()
    assert not memory.flags(epoch=2, beta_low=3.0, beta_high=3.0).bad.any()  # 3.5 == 1.25 + 2.25: strict


def test_memory_state_round_trips() -> None:
    memory = _memory()
    again = PairMemory(20, max_epochs=5)
    again.load_state_dict(memory.state_dict())
    assert torch.equal(torch.nan_to_num(again.losses, nan=-1.0), torch.nan_to_num(memory.losses, nan=-1.0))
