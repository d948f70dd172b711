"""The embedding cache: hits and misses exactly when it should, one encoding per image across frozen-encoder
adapters, atomic writes, damaged entries rebuilt with a message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fairbench.adapters.base import AdaptContext
from fairbench.cache import EmbeddingCache, embedding_key_parts
from fairbench.pipeline import RunConfig, run_cell

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def micro_tasks(micro_task_dir) -> Path:
    return micro_task_dir("synth_micro_cache")


@pytest.fixture()
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FAIRBENCH_CACHE", str(root))
    return root / "embeddings"


def _count_encoded(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[int]:
    seen: list[int] = []
    original = cls.image_outputs

    def counting(self, pixels):  # type: ignore[no-untyped-def]
        seen.append(int(pixels.shape[0]))
        return original(self, pixels)

    monkeypatch.setattr(cls, "image_outputs", counting)
    return seen


def _events(metrics: dict) -> dict[str, str]:
    return {e["split"]: e["event"] for e in metrics["embedding_cache"]["events"]}


def test_frozen_adapters_encode_each_image_once(tmp_path: Path, micro_tasks: Path, private_cache: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fairbench.models.openclip import OpenCLIPModel

    seen = _count_encoded(monkeypatch, OpenCLIPModel)
    results = {}
    for adapt, args in [("zeroshot", {}), ("linear_probe", {}), ("mlp", {"epochs": "2"})]:
        cfg = RunConfig(task="synth_micro_cache", model="tiny_openai_clip", adapt=adapt, out=tmp_path / "r",
                        weights="random", device="cpu", tasks_dirs=(micro_tasks,), n_boot=0, adapt_args=args)
        results[adapt] = run_cell(cfg).metrics
    assert sum(seen) == 32 + 24 + 24  # every image of every split exactly once over the three cells
    # the zero-shot cell's attribute-leakage probe (analyses.leakage) encodes the train split too
    assert _events(results["zeroshot"]) == {"train": "miss", "val": "miss", "test": "miss"}
    assert _events(results["linear_probe"]) == {"train": "hit", "val": "hit", "test": "hit"}
    assert _events(results["mlp"]) == {"train": "hit", "val": "hit", "test": "hit"}
    assert len(list(private_cache.rglob("*.safetensors"))) == 3 and not list(private_cache.rglob("*.tmp"))
    # a second zero-shot run (--overwrite) encodes nothing and gives identical numbers
    again = run_cell(RunConfig(task="synth_micro_cache", model="tiny_openai_clip", adapt="zeroshot",
                               out=tmp_path / "r", weights="random", device="cpu", tasks_dirs=(micro_tasks,), n_boot=0,
                               overwrite=True))
    assert sum(seen) == 80 and again.metrics["metrics"] == results["zeroshot"]["metrics"]


def test_cache_off(tmp_path: Path, micro_tasks: Path, private_cache: Path) -> None:
    cfg = RunConfig(task="synth_micro_cache", model="tiny_medclip_vit", adapt="zeroshot", out=tmp_path / "r",
                    weights="random", device="cpu", tasks_dirs=(micro_tasks,), n_boot=0, embedding_cache=False)
    assert run_cell(cfg).metrics["embedding_cache"] == {"enabled": False}
    assert not private_cache.exists()


def _context(micro_tasks: Path, *, seed: int = 0, card: str = "tiny_medclip_vit", **replace_task) -> AdaptContext:
    from fairbench.data.task import get_task
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model

    task = get_task("synth_micro_cache", (micro_tasks,))
    if replace_task:
        task = dataclasses.replace(task, **replace_task)
    torch.manual_seed(seed)
    model = build_model(get_model_card(card), "random", torch.device("cpu"))
    return AdaptContext(task=task, model=model, seed=seed, embedding_cache=EmbeddingCache())


def _event(ctx: AdaptContext, split: str = "val") -> str:
    ctx.encode(split)
    assert ctx.embedding_cache is not None
    return ctx.embedding_cache.events[-1]["event"]


def test_hits_and_misses_exactly_when_a_key_part_changes(micro_tasks: Path, private_cache: Path) -> None:
    first = _context(micro_tasks)
    assert _event(first) == "miss"
    same = _context(micro_tasks)
    assert _event(same) == "hit"
    assert np.array_equal(same.encode("val")["feature"], first.encode("val")["feature"])
    assert _event(_context(micro_tasks), "test") == "miss"  # another split
    assert _event(_context(micro_tasks, seed=1)) == "miss"  # other (random) weights
    assert _event(_context(micro_tasks, version="2")) == "miss"  # task version
    assert _event(_context(micro_tasks, card="tiny_medclip_resnet")) == "miss"  # another model card
    edited = _context(micro_tasks)  # the same card with any field changed
    edited.model.card = dataclasses.replace(edited.model.card, raw={**edited.model.card.raw, "description": "x"})
    assert _event(edited) == "miss"
    preprocessed = _context(micro_tasks)  # other preprocessing (the card hash changes with it too)
    pre = dataclasses.replace(preprocessed.model.card.preprocessing, interpolation="bicubic")
    preprocessed.model.card = dataclasses.replace(preprocessed.model.card, preprocessing=pre)
    assert _event(preprocessed) == "miss"
    assert _event(_context(micro_tasks)) == "hit"  # and the original is still there


@pytest.mark.parametrize("option", [{"image_size": 96}, {"seed": 7}])
def test_a_changed_dataset_option_misses(micro_tasks: Path, private_cache: Path, option: dict) -> None:
    """Same task name and version, same sample ids, other dataset options (other pixels): a miss, and the
    embeddings are those of the new images, not the stale ones."""
    first = _context(micro_tasks, card="tiny_openai_clip")
    assert _event(first) == "miss"
    options = {**first.task.dataset_options, **option}
    changed = _context(micro_tasks, card="tiny_openai_clip", dataset_options=options)
    assert changed.task.name == first.task.name and changed.task.version == first.task.version
    assert np.array_equal(changed.split("val").sample_ids, first.split("val").sample_ids)
    assert _event(changed) == "miss"
    fresh = changed.encode("val")["feature"]
    assert not np.allclose(fresh, first.encode("val")["feature"])
    uncached = _context(micro_tasks, card="tiny_openai_clip", dataset_options=options)
    uncached.embedding_cache = None
    assert np.array_equal(fresh, uncached.encode("val")["feature"])


def test_key_covers_sample_ids_and_pixels(micro_tasks: Path) -> None:
    ctx = _context(micro_tasks)
    samples = ctx.split("val")
    parts = embedding_key_parts(ctx.model, ctx.task, samples, weights_sha256="w")
    reordered = dataclasses.replace(samples, sample_ids=samples.sample_ids[::-1])
    assert embedding_key_parts(ctx.model, ctx.task, reordered, weights_sha256="w")["sample_ids_sha256"] != \
        parts["sample_ids_sha256"]
    assert parts["image_source"] == samples.images.key and parts["split"] == "val"
    assert set(parts) == {"format", "model", "model_card_sha256", "weights_sha256", "preprocessing", "task",
                          "task_version", "split", "sample_ids_sha256", "image_source"}
    assert EmbeddingCache.key(parts) != EmbeddingCache.key({**parts, "weights_sha256": "v"})


@pytest.mark.parametrize("damage", ["garbage", "checksum", "rows"])
def test_damaged_entry_is_rebuilt_with_a_message(micro_tasks: Path, private_cache: Path,
                                                monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    import fairbench.progress

    first = _context(micro_tasks)
    # a copy: the arrays map the entry's file, and the damage below is done in place (fairbench itself only ever
    # replaces an entry by renaming a new file over it, which leaves existing mappings as they were)
    original = {k: np.array(v) for k, v in first.encode("val").items()}
    (path,) = list(private_cache.rglob("*.safetensors"))
    if damage == "garbage":
        path.write_bytes(b"not an entry")
    else:  # rewritten with the safetensors package itself
        from safetensors import safe_open
        from safetensors.numpy import load_file, save_file

        arrays = load_file(path)
        with safe_open(path, framework="np") as f:
            metadata = f.metadata()
        if damage == "checksum":
            arrays["feature"][0, 0] += 1.0
        else:
            arrays["feature"], arrays["embedding"] = arrays["feature"][:-1], arrays["embedding"][:-1]
            manifest = json.loads(metadata["fairbench"])
            for k in ("feature", "embedding"):
                manifest["arrays"][k]["shape"][0] -= 1
            metadata["fairbench"] = json.dumps(manifest)
        save_file(arrays, path, metadata=metadata)
    messages: list[str] = []
    monkeypatch.setattr(fairbench.progress, "warn", messages.append)
    again = _context(micro_tasks)
    assert _event(again) == "rebuilt"
    assert len(messages) == 1 and str(path) in messages[0] and "rebuilding" in messages[0]
    assert np.array_equal(again.encode("val")["feature"], original["feature"])
    assert _event(_context(micro_tasks)) == "hit"  # the rebuilt entry is sound


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EmbeddingCache(tmp_path)
    parts = {"split": "val", "x": "1"}

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    import fairbench.cache

    monkeypatch.setattr(fairbench.cache, "_write_arrays", broken)
    with pytest.raises(OSError):
        cache.store(parts, {"embedding": np.zeros((2, 3)), "feature": np.zeros((2, 4))})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


_RACER = """
import json, os, sys, time
from pathlib import Path
import numpy as np
from fairbench.cache import EmbeddingCache

root, work, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
while not (work / "go").exists():  # both racers start together
    time.sleep(0.005)

def compute():
    (work / f"computed-{name}").write_text(str(os.getpid()))
    time.sleep(1.5)  # a slow encode: the other racer arrives while this one is writing
    rng = np.random.default_rng(7)
    return {"embedding": rng.standard_normal((40, 8)), "feature": rng.standard_normal((40, 16))}

cache = EmbeddingCache(root)
arrays = cache.get_or_compute({"split": "test", "model": "m"}, 40, compute)
np.savez(work / f"out-{name}.npz", **arrays)
print(json.dumps(cache.events[-1]))
"""


def test_two_processes_racing_on_one_entry_encode_it_once(tmp_path: Path) -> None:
    """Two workers miss the same entry at the same moment: one computes and stores it, the other waits on the
    entry's lock and reads what the first stored; both end with the same arrays and the file is whole."""
    import os
    import subprocess
    import sys
    import time

    root, work = tmp_path / "emb", tmp_path / "work"
    work.mkdir()
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(work), name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for name in ("a", "b")]
    time.sleep(1.0)  # both imported and polling
    (work / "go").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    events = sorted((json.loads(o[0].strip().splitlines()[-1]) for o in outs), key=lambda e: e["event"])

    computed = sorted(p.name for p in work.glob("computed-*"))
    assert len(computed) == 1, computed  # one writer: the images were encoded once
    assert [e["event"] for e in events] == ["hit", "miss"]
    assert float(events[0]["waited_s"]) > 0.5  # the reader waited for the writer's encode, then reused it
    rng = np.random.default_rng(7)  # the reference, drawn here
    expected = {"embedding": rng.standard_normal((40, 8)), "feature": rng.standard_normal((40, 16))}
    for name in ("a", "b"):
        with np.load(work / f"out-{name}.npz") as z:
            for k, v in expected.items():
                np.testing.assert_array_equal(z[k], v.astype(np.float32))
    # one complete entry, no temporary or lock files left behind
    files = sorted(p.name for p in root.rglob("*") if p.is_file())
    assert len(files) == 1 and files[0].endswith(".safetensors"), files


_HOLDER = """
import fcntl, json, os, sys, time
from pathlib import Path
import numpy as np

entry, n, ready = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
parts = json.loads(sys.argv[4])
lock = entry.with_name(entry.name + ".lock")
entry.parent.mkdir(parents=True, exist_ok=True)
fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
ready.touch()
time.sleep(1.5)  # another worker encoding this entry
from fairbench.cache import EmbeddingCache
EmbeddingCache(entry.parent.parent).store(parts, {"embedding": np.full((n, 3), 7.0), "feature": np.full((n, 5), 7.0)})
lock.unlink()
os.close(fd)
"""


def test_encode_waits_for_the_worker_writing_its_entry(tmp_path: Path, micro_tasks: Path,
                                                      private_cache: Path) -> None:
    """A run whose entry another worker is writing waits on the entry's lock and reuses what it stored (here a
    sentinel the other worker wrote) instead of encoding the images itself."""
    import os
    import subprocess
    import sys
    import time

    ctx = _context(micro_tasks)
    samples = ctx.split("val")
    parts = embedding_key_parts(ctx.model, ctx.task, samples, weights_sha256=ctx.weights_sha256())
    assert ctx.embedding_cache is not None
    entry = ctx.embedding_cache.path(EmbeddingCache.key(parts))
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(entry), str(len(samples)), str(ready),
                               json.dumps(parts)], env=env)
    try:
        deadline = time.time() + 60
        while not ready.exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert ready.exists()
        arrays = ctx.encode("val")
    finally:
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert arrays["embedding"].shape == (len(samples), 3) and np.all(arrays["embedding"] == 7.0)
    assert np.all(arrays["feature"] == 7.0)
    last = ctx.embedding_cache.events[-1]
    assert last["event"] == "hit" and float(last["waited_s"]) > 0.5
