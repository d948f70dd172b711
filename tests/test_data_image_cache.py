"""The preprocessed-image cache: miss then hit, keys, aspect, integrity and rebuilds."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from fixtures_data import png, truncate

from fairbench.data.files import FileImages, ImageReadError, decode_image
from fairbench.data.image_cache import CachedImages, auto_cache_size
from fairbench.data.prepare import parse_image_cache
from fairbench.errors import FairbenchError


def make_source(tmp_path, n=6, split="train", sizes=None, mode="L"):
    sizes = sizes or [(40 + 3 * i, 30 + 2 * i) for i in range(n)]
    paths = [png(tmp_path / "img" / f"{i}.png", size=sizes[i], seed=i, mode=mode) for i in range(n)]
    return FileImages(paths, prefix=f"test:abc:{split}", sample_ids=[f"s{i}" for i in range(n)], mode=mode)


def test_miss_then_hit_same_pixels_as_direct_decoding(tmp_path):
    src = make_source(tmp_path)
    first = CachedImages(src, 32, root=tmp_path / "cache")
    assert not first.hit and first.path.is_dir()
    manifest = first.path / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    second = CachedImages(src, 32, root=tmp_path / "cache")
    assert second.hit and second.path == first.path and manifest.stat().st_mtime_ns == stamp
    got = second.load(np.arange(6))
    for i, img in enumerate(got):
        assert np.array_equal(img, decode_image(src.files[i], max_side=32))
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no leftovers


def test_aspect_kept_padding_cropped_never_upsampled(tmp_path):
    src = make_source(tmp_path, n=3, sizes=[(100, 50), (50, 100), (20, 10)])
    imgs = CachedImages(src, 64, root=tmp_path / "cache").load(np.arange(3))
    assert [i.shape for i in imgs] == [(32, 64), (64, 32), (10, 20)]  # (H, W); the small one stays small


def test_rgb_sources(tmp_path):
    src = make_source(tmp_path, n=2, mode="RGB")
    imgs = CachedImages(src, 32, root=tmp_path / "cache").load(np.arange(2))
    assert imgs[0].ndim == 3 and imgs[0].shape[2] == 3


def test_key_covers_size_split_ids_and_file_changes(tmp_path):
    src = make_source(tmp_path)
    root = tmp_path / "cache"
    base = CachedImages(src, 32, root=root).path
    assert CachedImages(src, 48, root=root).path != base
    other_split = FileImages(src.files, prefix="test:abc:val", sample_ids=src.sample_ids)
    assert CachedImages(other_split, 32, root=root).path != base
    fewer = src.subset(np.arange(5))
    assert CachedImages(fewer, 32, root=root).path != base
    png(src.paths[0], size=(41, 31), seed=99)  # replaced file: new size and mtime
    os.utime(src.paths[0], ns=(1, 1))
    changed = CachedImages(src, 32, root=root)
    assert changed.path != base and not changed.hit


def test_corrupt_rows_and_manifests_are_rebuilt_with_a_message(tmp_path, capsys):
    src = make_source(tmp_path)
    root = tmp_path / "cache"
    path = CachedImages(src, 32, root=root).path
    pixels = np.load(path / "pixels.npy", mmap_mode="r+")
    pixels[2, 0, 0] ^= 0xFF
    pixels.flush()
    del pixels
    c = CachedImages(src, 32, root=root)
    assert c.hit  # the header is intact: the damage is found when the row is read
    img = c.load(np.array([2]))[0]
    assert np.array_equal(img, decode_image(src.files[2], max_side=32))
    assert "corrupt (row 2 fails its checksum); rebuilding" in capsys.readouterr().err.replace("\n", " ")

    (path / "manifest.json").write_text("{not json")
    c = CachedImages(src, 32, root=root)
    assert not c.hit and json.loads((path / "manifest.json").read_text())["fields"]["n"] == 6
    assert "corrupt" in capsys.readouterr().err

    truncate(path / "pixels.npy", keep=0.5)
    c = CachedImages(src, 32, root=root)
    assert not c.hit and len(c.load(np.arange(6))) == 6


def test_unreadable_images_are_recorded_not_hidden(tmp_path):
    src = make_source(tmp_path)
    truncate(src.paths[1])
    src.paths[4].unlink()
    c = CachedImages(src, 32, root=tmp_path / "cache")
    assert c.unreadable == {1: "truncated", 4: "missing"}
    with pytest.raises(ImageReadError, match="image truncated: .*1.png"):
        c.load(np.array([1]))
    assert CachedImages(src, 32, root=tmp_path / "cache").unreadable == {1: "truncated", 4: "missing"}


@pytest.mark.parametrize("model_input, size", [(64, 256), (224, 320), (256, 320), (384, 512), (448, 640),
                                               (512, 640), (1024, 1280)])
def test_auto_cache_size(model_input, size):
    assert auto_cache_size(model_input) == size


def test_auto_cache_size_for_square_sources():
    assert auto_cache_size(224, square=True) == 224


def test_parse_image_cache():
    assert parse_image_cache("auto", 224) == "auto" and parse_image_cache("off", 224) is None
    assert parse_image_cache("512", 224) == 512
    with pytest.raises(FairbenchError, match="smaller than the model input"):
        parse_image_cache("128", 224)
    with pytest.raises(FairbenchError, match="expected auto, off or a size"):
        parse_image_cache("big", 224)


# -- the default cache keeps each model's own pipeline ---------------------------------------------------------
def _smooth_png(path, size, seed=0, mode="L"):
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    img = 127 + 60 * np.sin(xx / 23.0) + 50 * np.cos(yy / 31.0) + rng.normal(0, 4, (h, w))
    img = img.clip(0, 255).astype(np.uint8)
    if mode == "RGB":
        img = np.stack([img, img[::-1], img[:, ::-1]], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, mode).save(path)
    return path


def _grey_levels(a, b, std) -> float:
    import torch

    s = torch.tensor(std).view(1, -1, 1, 1)
    return float(((a - b).abs() * s).max()) * 255


# (W, H): non-square in both directions, an odd aspect, one smaller than the model input, one square
CACHE_SHAPES = [(1000, 800), (640, 1000), (517, 389), (180, 260), (300, 300)]


def _noise_png(path, size, seed=0, mode="L"):
    from PIL import Image

    w, h = size
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, mode).save(path)
    return path


def _cached_and_direct(tmp_path, pre, kind, mode, shapes):
    """(uncached tensors, tensors from the default image cache, the files) for one model preprocessing."""
    from fairbench.data.prepare import PreparedLoader
    from fairbench.models.preprocess import CacheGeometry

    make = _smooth_png if kind == "smooth" else _noise_png
    paths = [make(tmp_path / "img" / f"{i}.png", s, seed=i, mode=mode) for i, s in enumerate(shapes)]
    src = FileImages(paths, prefix="test:exact:train", sample_ids=[f"s{i}" for i in range(len(paths))], mode=mode)
    loader = PreparedLoader(_Inner(src), image_cache="auto", model_input=max(pre.image_size, pre.load_size or 0),
                            geometry=CacheGeometry(pre), cache_root=tmp_path / "cache")
    cached = loader.load("train", None).images
    assert isinstance(cached, CachedImages) and cached.geometry is not None
    idx = np.arange(len(paths))
    again = CachedImages(src, 0, root=tmp_path / "cache", geometry=loader.geometry)
    assert again.hit and again.path == cached.path
    return pre(src.load(idx)), pre(cached.load(idx)), paths


@pytest.mark.parametrize("model", ["medclip_vit", "gloria", "clip_vit_b16", "biomedclip", "blip2"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_default_cache_serves_what_the_model_pipeline_makes_of_the_full_image(tmp_path, model, mode, kind):
    """The uncached path (full-resolution decode, the model's own preprocessing) against the default cache:
    identical tensors for every family (all resize with PIL on uint8 and the cache stores PIL's output)."""
    from fairbench.models.base import get_model_card

    pre = get_model_card(model).preprocessing
    direct, served, _ = _cached_and_direct(tmp_path, pre, kind, mode, CACHE_SHAPES)
    assert served.shape == direct.shape
    assert torch_equal(served, direct)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


# short side below, near and above 224, both orientations
REFERENCE_SHAPES = [(150, 100), (100, 150), (230, 230), (180, 260), (300, 224), (517, 389), (640, 1000)]


@pytest.mark.parametrize("model", ["clip_vit_b16", "biomedclip", "blip2"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_default_cache_equals_the_upstream_transform(tmp_path, model, mode, kind):
    """Through ``--image-cache auto`` the model sees what open_clip's ``image_transform(224, is_train=False)``
    (CLIP, BiomedCLIP) or transformers' PIL BLIP processor (BLIP-2) makes of the file, with their own constants:
    exact up to float32 rounding (<= 0.01 grey level)."""
    import open_clip
    import torch
    from open_clip.constants import OPENAI_DATASET_STD
    from PIL import Image
    from transformers import BlipImageProcessorPil

    from fairbench.models.base import get_model_card

    pre = get_model_card(model).preprocessing
    _, served, paths = _cached_and_direct(tmp_path, pre, kind, mode, REFERENCE_SHAPES)
    if model == "blip2":
        proc = BlipImageProcessorPil(size={"height": 224, "width": 224}, resample=Image.Resampling.BICUBIC)
        refs = [proc(Image.open(p), return_tensors="pt")["pixel_values"][0] for p in paths]
        std = proc.image_std
    else:
        t = open_clip.image_transform(224, is_train=False)
        refs = [t(Image.open(p)) for p in paths]
        std = OPENAI_DATASET_STD
    assert _grey_levels(served, torch.stack(refs), std) <= 0.01


class _Inner:
    """A dataset loader serving one FileImages source as every split."""

    needs_data_root = False

    def __init__(self, images: FileImages) -> None:
        self.images = images

    def fingerprint(self) -> str:
        return "inner"

    def load(self, split, data_root):
        from fairbench.data.base import RawSplit

        return RawSplit(sample_ids=np.asarray(self.images.sample_ids), columns={}, images=self.images)


def test_default_cache_entries_are_keyed_by_the_model_pipeline(tmp_path):
    from fairbench.models.base import get_model_card
    from fairbench.models.preprocess import CacheGeometry

    src = make_source(tmp_path, n=3)
    entries = {CachedImages(src, 0, root=tmp_path / "cache", geometry=CacheGeometry(get_model_card(m).preprocessing))
               for m in ("medclip_vit", "gloria", "clip_vit_b16", "blip2")}
    assert len({e.path for e in entries}) == 4 and len({e.key for e in entries}) == 4


def test_cache_key_changes_with_the_pipeline_version(tmp_path):
    """Entries built by another implementation of the same card settings (PIPELINE_VERSION: 1 resized in float
    with torch) are other entries, and so are the embeddings computed from them (the image source key)."""
    import dataclasses

    from fairbench.models.base import get_model_card
    from fairbench.models.preprocess import PIPELINE_VERSION, CacheGeometry

    pre = get_model_card("clip_vit_b16").preprocessing
    assert pre.version == PIPELINE_VERSION >= 2
    old = dataclasses.replace(pre, version=1)
    assert old.key() != pre.key()
    src = make_source(tmp_path, n=2)
    a = CachedImages(src, 0, root=tmp_path / "cache", geometry=CacheGeometry(pre))
    b = CachedImages(src, 0, root=tmp_path / "cache", geometry=CacheGeometry(old))
    assert a.path != b.path and a.key != b.key
