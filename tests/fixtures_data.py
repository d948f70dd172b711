"""Tiny fake datasets in each upstream layout, written by the tests (no real images are ever needed).

- NIH ChestX-ray14: PNGs in ``images/`` or ``images_00N/images/`` plus a ``Data_Entry_2017_v2020.csv``
  with NIH's columns.
- Harvard-FairVLMed: ``Training/ Validation/ Test|Testing/data_xxxxx.npz`` plus the note-summaries CSV.
- CheXpert: ``CheXpert-v1.0-small/train.csv`` with frontal and lateral JPEGs, plus a CHEXPERT DEMO CSV.

Each writer returns what a test needs to check the loader against (ids, labels, attributes).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

NIH_COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
               "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]


def png(path: Path, size: tuple[int, int] = (12, 10), seed: int = 0, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def jpeg(path: Path, size: tuple[int, int] = (16, 20), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), "L").save(path, quality=90)
    return path


# -- breaking files on purpose --------------------------------------------------------------------------

def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(40, int(len(data) * keep))])


def not_an_image(path: Path) -> None:
    path.write_text("this is not an image\n")


# -- NIH ChestX-ray14 ------------------------------------------------------------------------------------

def nih_rows(n_patients: int = 40, images_per_patient: int = 3, seed: int = 0,
             findings: tuple[str, ...] = ("Effusion", "Mass", "No Finding", "Effusion|Mass")) -> list[dict]:
    """Metadata rows with NIH's columns: every patient has a sex and an age that crosses 60 for some."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(1, n_patients + 1):
        sex = "MF"[p % 2]
        age0 = int(rng.integers(40, 75))
        for k in range(images_per_patient):
            rows.append({"Image Index": f"{p:08d}_{k:03d}.png", "Finding Labels": findings[(p + k) % len(findings)],
                         "Follow-up #": k, "Patient ID": p, "Patient Age": age0 + k, "Patient Gender": sex,
                         "View Position": "PA" if (p + k) % 3 else "AP", "OriginalImage[Width": 1024,
                         "Height]": 1024, "OriginalImagePixelSpacing[x": 0.143, "y]": 0.143})
    return rows


def write_nih_metadata(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=NIH_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def write_nih_images(root: Path, names: list[str], *, layout: str = "flat", size: tuple[int, int] = (12, 12)) -> dict[str, Path]:
    """PNGs for ``names``: ``flat`` = ``images/``; ``batches`` = alternating ``images_001/images/`` and
    ``images_002/images/``."""
    out = {}
    for i, name in enumerate(names):
        folder = root / "images" if layout == "flat" else root / f"images_{1 + i % 2:03d}" / "images"
        out[name] = png(folder / name, size=size, seed=i)
    return out


# -- Harvard-FairVLMed -------------------------------------------------------------------------------------

def write_fairvlmed(root: Path, n: dict[str, int] | None = None, *, test_folder: str = "Test",
                    legacy_hispanic: bool = False, notes_name: str = "gpt4_summarized_notes.csv",
                    image_shape: tuple[int, int] = (20, 16), float_images: bool = False) -> dict[str, Any]:
    """npz files per split folder and a notes CSV; returns {split folder: [per-sample dict]}."""
    n = n or {"Training": 12, "Validation": 8, test_folder: 10}
    rng = np.random.default_rng(1)
    written: dict[str, Any] = {}
    notes = []
    k = 0
    for folder, count in n.items():
        written[folder] = []
        for _ in range(count):
            k += 1
            name = f"data_{k:05d}.npz"
            img = rng.integers(0, 256, image_shape).astype(np.uint8)
            if float_images:
                img = img.astype(np.float32) / 255.0
            s = {"glaucoma": k % 2, "race": k % 3, "gender": (k // 2) % 2, "ethnicity": [0, 1, -1][k % 3],
                 "language": [0, 1, 2, -1][k % 4], "maritalstatus": [0, 1, 2, 3, 4, -1][k % 6],
                 "age": 40.0 + k}
            arrays = {key: np.array(v) for key, v in s.items()}
            if legacy_hispanic:
                arrays["hispanic"] = arrays.pop("ethnicity")
            arrays.update(slo_fundus=img, md=np.array(-1.5), tds=np.zeros(52, np.float32),
                          note=np.array(f"raw note {k}"))
            (root / folder).mkdir(parents=True, exist_ok=True)
            np.savez(root / folder / name, **arrays)
            summary = (f"patient {k} " + "with a long clinical history of elevated intraocular pressure " * 5).strip()
            notes.append((name, f"full note {k}", summary))
            written[folder].append({"id": name[:-4], "name": name, "summary": summary, **s})
    if notes_name:
        with open(root / notes_name, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["filename", "note", "gpt4_summary"])
            w.writerows(notes)
    return written


# -- CheXpert ----------------------------------------------------------------------------------------------

CHEXPERT_FINDINGS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture", "Support Devices"]


def write_chexpert(root: Path, n_patients: int = 30, *, folder: str = "CheXpert-v1.0-small",
                   demographics: bool = False) -> list[dict]:
    """``root/folder/train.csv`` with two studies per patient (frontal + lateral each) and JPEGs."""
    rows = []
    k = 0
    for p in range(1, n_patients + 1):
        for study in (1, 2):
            for view in ("frontal", "lateral"):
                k += 1
                rel = f"{folder}/train/patient{p:05d}/study{study}/view1_{view}.jpg"
                jpeg(root / rel, seed=k)
                labels: dict[str, Any] = {f: "" for f in CHEXPERT_FINDINGS}
                cycle = (2 * p + study) % 6  # every label pattern among frontal images
                if cycle == 0:
                    labels["No Finding"] = 1.0
                elif cycle == 1:
                    labels["Edema"] = 1.0
                elif cycle == 2:
                    labels["Atelectasis"], labels["Edema"] = -1.0, 1.0  # uncertain + certain
                elif cycle == 3:
                    labels["Cardiomegaly"], labels["Pleural Effusion"] = 1.0, 1.0  # two findings
                elif cycle == 4:
                    labels["No Finding"] = -1.0
                else:
                    labels["Pleural Effusion"], labels["Cardiomegaly"] = 1.0, 0.0
                rows.append({"Path": rel, "Sex": ["Male", "Female", "Unknown"][p % 3] if p % 10 else "Unknown",
                             "Age": 50 + (p % 20), "Frontal/Lateral": view.capitalize(),
                             "AP/PA": ("AP" if p % 2 else "PA") if view == "frontal" else "", **labels})
    path = root / folder / "train.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS],
                           lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    if demographics:
        races = ["White", "Black or African American", "Asian, non-Hispanic", "Other", "Unknown"]
        with open(root / "CHEXPERT DEMO.csv", "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY"])
            for p in range(1, n_patients):  # the last patient has no demographics row
                w.writerow([f"patient{p:05d}", "Male", 50, races[p % len(races)], "Non-Hispanic/Non-Latino"])
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as a CSV with a header (the columns of the first row); returns ``path``."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
