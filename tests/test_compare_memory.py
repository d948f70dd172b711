"""What `fairbench compare` holds per row (issue #24 item 1; docs/scale.md, "compare and metrics"): only the
evaluated split's rows and the columns the metrics read, groups and splits as categoricals, the sample ids in
pyarrow (no Python str per row); the validation rows only when the threshold must still be chosen on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fixtures_results import fabricate_cell

import fairbench.compare as cmp

N_TEST = 3000


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cmpmem")
    a = fabricate_cell(root, model="m_a", strength=1.0, n_test=N_TEST, same_samples=True)
    b = fabricate_cell(root, model="m_b", strength=0.7, n_test=N_TEST, same_samples=True)
    frame = pd.read_parquet(b / "predictions.parquet")  # an extra column compare does not read
    frame["note"] = [f"free text {i}" for i in range(len(frame))]
    frame.to_parquet(b / "predictions.parquet", index=False)
    return a, b


def _captured(monkeypatch) -> list[pd.DataFrame]:
    seen: list[pd.DataFrame] = []
    real = cmp._aligned

    def spy(a, b, fa, fb, card):  # type: ignore[no-untyped-def]
        seen.extend([fa, fb])
        return real(a, b, fa, fb, card)

    monkeypatch.setattr(cmp, "_aligned", spy)
    return seen


def test_compare_reads_only_the_evaluated_rows_and_columns(pair, monkeypatch) -> None:
    a, b = pair
    assert json.loads((a / "metrics.json").read_text())["threshold"]["value"] == 0.5  # recorded: no val needed
    seen = _captured(monkeypatch)
    pool = pa.default_memory_pool().backend_name
    result = cmp.compare(a, b, n_boot=20)
    assert pa.default_memory_pool().backend_name == pool  # the read's allocator is put back
    assert result["n"] == N_TEST
    for frame, cell in zip(seen, (a, b), strict=True):
        full = pd.read_parquet(cell / "predictions.parquet")
        assert len(frame) == N_TEST  # main: 3200 rows, val included
        assert set(frame["split"].astype(str)) == {"test"}
        assert "note" not in frame.columns
        assert not any(frame[c].dtype == object for c in frame.columns), frame.dtypes.to_dict()
        for col in ("split", "attr_sex", "attr_age", "attr_race"):
            assert isinstance(frame[col].dtype, pd.CategoricalDtype), (col, frame[col].dtype)
        # the same rows, in the file's order, with the same values
        test = full[full["split"] == "test"].reset_index(drop=True)
        assert frame["sample_id"].astype(str).tolist() == test["sample_id"].astype(str).tolist()
        np.testing.assert_array_equal(frame["prob_abnormal"].to_numpy(), test["prob_abnormal"].to_numpy())
        np.testing.assert_array_equal(frame["label"].to_numpy(), test["label"].to_numpy())
        assert frame["attr_race"].astype(str).tolist() == test["attr_race"].astype(str).tolist()


def _alone(cell: Path, dst: Path) -> Path:
    """The cell's predictions file in a folder of its own: no metrics.json beside it records a threshold."""
    dst.mkdir()
    (dst / "predictions.parquet").write_bytes((cell / "predictions.parquet").read_bytes())
    return dst / "predictions.parquet"


def test_compare_reads_val_when_the_threshold_is_chosen_by_the_rule(pair, monkeypatch, tmp_path) -> None:
    a, b = pair
    seen = _captured(monkeypatch)
    result = cmp.compare(_alone(a, tmp_path / "a"), _alone(b, tmp_path / "b"), task="synth_cxr", n_boot=0)
    assert result["thresholds"]["a"]["from"] == "task card rule"
    for frame in seen:
        assert set(frame["split"].astype(str)) == {"test", "val"}


def test_compare_sample_order_and_mismatch_messages_unchanged(pair, tmp_path) -> None:
    a, b = _alone(pair[0], tmp_path / "a"), _alone(pair[1], tmp_path / "b")
    frame = pd.read_parquet(b)
    shuffled = tmp_path / "shuffled.parquet"
    frame.sample(frac=1.0, random_state=3).to_parquet(shuffled, index=False)
    ref = cmp.compare(a, b, task="synth_cxr", n_boot=30)
    got = cmp.compare(a, shuffled, task="synth_cxr", n_boot=30)
    assert json.dumps(got["metrics"], sort_keys=True) == json.dumps(ref["metrics"], sort_keys=True)
    dup = frame.copy()
    dup.loc[dup.index[-1], "sample_id"] = "test-00007"
    dup.to_parquet(tmp_path / "dup.parquet", index=False)
    with pytest.raises(cmp.FairbenchError, match=r"duplicate sample_id\(s\) in split\(s\) test: 'test-00007' \(2 rows"):
        cmp.compare(a, tmp_path / "dup.parquet", task="synth_cxr", n_boot=0)


def test_compare_duplicate_id_in_a_cell_with_a_recorded_threshold(pair, tmp_path) -> None:
    import shutil

    a, b = pair
    dup = tmp_path / "dup"
    shutil.copytree(b, dup)
    frame = pd.read_parquet(dup / "predictions.parquet")
    frame.loc[frame.index[-1], "sample_id"] = "test-00011"
    frame.loc[frame.index[-2], "sample_id"] = "test-00005"
    frame.to_parquet(dup / "predictions.parquet", index=False)
    with pytest.raises(cmp.FairbenchError, match=r"duplicate sample id\(s\) in split 'test': test-00005, test-00011$"):
        cmp.compare(a, dup, n_boot=0)
