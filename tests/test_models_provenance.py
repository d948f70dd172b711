"""What identifies a model's weights, tokenizer and config in metrics.json (and so in config_sha256, the
embedding-cache key and the stale-cell check)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from fairbench.errors import ResultsError, WeightsError
from fairbench.models.base import get_model_card
from fairbench.models.build import build_model

CPU = torch.device("cpu")


def _reorder_safetensors_header(src: Path, dest: Path) -> None:
    """The same tensors with the header's entries in reverse order (safetensors writes its header from a hash
    map, so two processes saving identical tensors can write different bytes)."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    reordered = json.dumps(dict(reversed(list(header.items())))).encode()
    reordered += b" " * (-len(reordered) % 8)
    dest.write_bytes(struct.pack("<Q", len(reordered)) + reordered + raw[8 + n:])


def test_weights_sha256_hashes_tensors_not_file_bytes(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    card = get_model_card("tinyclip")
    src = build_model(card, "random", CPU)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({k: v.contiguous() for k, v in src.module.state_dict().items()}, str(a),
              metadata={"card": "tinyclip", "task": "synth_cxr"})
    _reorder_safetensors_header(a, b)
    assert a.read_bytes() != b.read_bytes()
    info_a = build_model(card, str(a), CPU).weights_info
    info_b = build_model(card, str(b), CPU).weights_info
    assert info_a["sha256"] == info_b["sha256"]
    # and it still tells other weights apart
    state = {k: v.clone().contiguous() for k, v in src.module.state_dict().items()}
    state["logit_scale"] += 1
    c = tmp_path / "c.safetensors"
    save_file(state, str(c))
    assert build_model(card, str(c), CPU).weights_info["sha256"] != info_a["sha256"]


def _medclip_dir(d: Path) -> None:
    """tiny_medclip_resnet in MedCLIP's layout, with its tokenizer vocabulary beside the weights."""
    import shutil

    from fairbench.models.tiny import tiny_vocab_dir

    d.mkdir()
    src = build_model(get_model_card("tiny_medclip_resnet"), "random", CPU)
    torch.save(src.module.state_dict(), d / "pytorch_model.bin")
    shutil.copy(tiny_vocab_dir() / "vocab.txt", d / "vocab.txt")


def test_tokenizer_is_hashed_recorded_and_part_of_the_stale_check(tmp_path: Path, micro_task_dir) -> None:
    from fairbench.models.weights import sha256_file
    from fairbench.pipeline import RunConfig, run_cell, stale_cell

    d = tmp_path / "medclip"
    _medclip_dir(d)
    cfg = RunConfig(task="provenance_micro", model="tiny_medclip_resnet", adapt="zeroshot", seed=0,
                    out=tmp_path / "results", weights=f"local-dir:{d}", device="cpu",
                    tasks_dirs=(micro_task_dir("provenance_micro"),), n_boot=0)
    doc = run_cell(cfg).metrics
    tok = doc["model"]["weights"]["tokenizer"]
    assert tok["files"]["vocab.txt"] == sha256_file(d / "vocab.txt")
    assert stale_cell(cfg) is None and run_cell(cfg).skipped
    # the same weights with another vocabulary (two word pieces swapped): the old numbers no longer answer
    lines = (d / "vocab.txt").read_text().splitlines()
    lines[-1], lines[-2] = lines[-2], lines[-1]
    (d / "vocab.txt").write_text("\n".join(lines) + "\n")
    assert "tokenizer" in (stale_cell(cfg) or "")
    with pytest.raises(ResultsError, match="other tokenizer files"):
        run_cell(cfg)
    redone = run_cell(RunConfig(**{**cfg.__dict__, "overwrite": True})).metrics
    assert redone["model"]["weights"]["sha256"] == doc["model"]["weights"]["sha256"]
    assert redone["config_sha256"] != doc["config_sha256"]


def test_random_weights_say_which_tokenizer_is_still_needed(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        build_model(get_model_card("gloria"), "random", CPU)
    msg = str(err.value)
    assert "--weights random replaces only the weights" in msg
    assert "hf-hub:emilyalsentzer/Bio_ClinicalBERT" in msg and str(tmp_path / "hub") in msg
    assert "`hf download emilyalsentzer/Bio_ClinicalBERT vocab.txt`" in msg
    assert "local-dir" not in msg  # no weights directory to put it in when the weights are random


def test_the_download_hint_names_a_command_the_installed_huggingface_hub_provides(tmp_path: Path, monkeypatch) -> None:
    """issue 21 item 14: the hint said `huggingface-cli download`, which huggingface_hub 1.x no longer installs.
    The command in the hint must run: its program is on PATH and its subcommand answers --help."""
    import re
    import shutil
    import subprocess

    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        build_model(get_model_card("gloria"), "random", CPU)
    command = re.search(r"\(e\.g\. `([^`]+)`", str(err.value)).group(1).split()
    program = shutil.which(command[0])
    assert program is not None, f"{command[0]} is not installed"
    proc = subprocess.run([program, command[1], "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "REPO_ID" in proc.stdout, proc.stdout + proc.stderr
    cards = Path(__file__).resolve().parents[1] / "fairbench" / "models" / "cards"
    docs = Path(__file__).resolve().parents[1] / "docs"
    stale = [p.name for p in [*cards.glob("*.yaml"), *docs.glob("*.md")] if "huggingface-cli" in p.read_text()]
    assert stale == []


def test_gloria_reads_the_tokenizer_from_its_weights_directory(tmp_path: Path) -> None:
    """The hint 'put them in the weights directory given as --weights local-dir:PATH' holds for GLoRIA too."""
    from fairbench.models.inputs import resolve_inputs

    d = tmp_path / "gloria"
    d.mkdir()
    (d / "chexpert_resnet50.ckpt").write_bytes(b"")
    (d / "vocab.txt").write_text("[PAD]\n")
    inputs = resolve_inputs(get_model_card("gloria"), f"local-dir:{d}")
    assert inputs.problems == [] and inputs.tokenizer == d


def test_a_missing_data_root_alone_is_a_data_error_and_with_a_model_input_a_weights_error(tmp_path):
    """The up-front check names every missing piece; its error class says which kind: DataError when only the
    dataset is missing (a sweep records it as such), WeightsError as soon as a model input is missing too."""
    from fairbench.data.task import get_task
    from fairbench.errors import DataError
    from fairbench.models.inputs import check_run_inputs

    task = get_task("fairvlmed")
    with pytest.raises(DataError, match="--data-root"):
        check_run_inputs(get_model_card("tinyclip"), "random", task=task)
    with pytest.raises(WeightsError, match="--data-root") as exc:
        check_run_inputs(get_model_card("medclip_vit"), f"local:{tmp_path / 'missing.bin'}", task=task)
    assert "missing.bin" in str(exc.value)
