"""Every family's preprocessing, step for step as its official code does it, on PIL images.

All official pipelines resize single PIL images; so do these (per image, then stacked):

- ``shortest`` (open_clip: CLIP, BiomedCLIP; ``open_clip.image_transform(224, is_train=False)``): torchvision
  ``Resize(224)`` on a PIL image (the short side becomes 224, the long side ``int(224 * long / short)``,
  PIL's resize with the card's filter), ``CenterCrop(224)`` (offsets ``int(round((side - 224) / 2))``),
  RGB, ``ToTensor``, ``Normalize``. PIL resizes an 8-bit image in two passes (horizontal, then vertical)
  and rounds and clips to uint8 after each, so the tensor equals open_clip's exactly (a float resize
  differed by up to 22 grey levels on noise, where bicubic overshoots; docs/models.md).
- ``square`` (BLIP-2: LAVIS ``Resize((224, 224))`` on a PIL image, transformers' ``BlipImageProcessor``):
  PIL's resize to 224 x 224, no crop.

- ``pad_square`` (MedCLIP, ``medclip/dataset.py``): the image is pasted, centred, on a black ``L`` canvas of
  side ``max(h, w, image_size)`` (pasting an RGB image into an ``L`` canvas converts it with PIL's ITU-R 601-2
  luma), resized to ``image_size`` x ``image_size`` (torchvision ``Resize`` on a PIL image = PIL bilinear),
  ``ToTensor``, normalised with MedCLIP's one-channel mean/std, and repeated to three channels (MedCLIP's
  collator and vision model repeat a one-channel batch).
- ``longest_pad`` (GLoRIA, ``gloria/models/gloria_model.py: process_img/_resize_img``): grayscale, the longest
  side resized to ``load_size`` (the other side ``int(side * scale)``), zero padding to a square (floor
  before, ceil after), RGB, ``CenterCrop(image_size)``, ``ToTensor``, ``Normalize(0.5, 0.5)``. Upstream
  resizes with OpenCV ``INTER_AREA``; fairbench has no OpenCV dependency and re-implements it
  (``interpolation: area``, :func:`area_resize`): exact area averaging when shrinking both sides, OpenCV's
  INTER_AREA enlarging rule otherwise (pixel replication at integer factors). It equals OpenCV up to the
  rounding of a grey level (OpenCV's integer-factor SIMD paths round halves up; fixed-point arithmetic).
  Grayscale conversion of RGB input uses PIL's ITU-R 601-2 luma (OpenCV's ``imread(path, 0)`` uses the same
  weights in fixed point).
- ``chexzero`` (CheXzero, ``data_process.py: preprocess`` then ``zero_shot.py: make``): the longest side
  resized to ``load_size`` (320; the other side ``int(side * ratio)``) with PIL's LANCZOS (upstream's
  ``Image.ANTIALIAS``, RGB images resized before the conversion), pasted on a black ``L`` canvas of side
  ``load_size`` at ``((320 - w) // 2, (320 - h) // 2)`` (the paste converts RGB with ITU-R 601-2 luma), kept on
  the 0-255 scale (no ``ToTensor``), repeated to three channels, normalised with the card's mean/std **on the
  0-255 scale**, then resized as a float tensor to ``image_size`` (224) with ``interpolate(mode=bicubic,
  align_corners=False)``, no antialiasing (torchvision 0.11's tensor ``Resize``, which CheXzero pins).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fairbench.cards import card_sha256

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "PIL_PIPELINES",
    "PIPELINE_VERSION",
    "CacheGeometry",
    "Preprocessing",
    "area_resize",
    "center_pad_square",
    "chexzero_pad_pil",
    "fov_crop",
    "li_threshold",
    "longest_pad_pil",
    "longest_pad_square",
    "pad_square_pil",
    "pil_pipeline",
    "resize_crop_pil",
    "shortest_geometry",
    "to_gray_pil",
]

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}


OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: the version of fairbench's implementation of the pipelines: part of :meth:`Preprocessing.key` (so of the
#: embedding cache's and the image cache's keys, and of tinyclip's pretraining key), bumped whenever the same
#: card settings give other pixels. 2: ``shortest``/``square`` resize with PIL on uint8 (1: torch, float).
PIPELINE_VERSION = 2


@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing of a list of uint8 grayscale/RGB arrays into one normalised batch.

    ``resize``:

    - ``shortest``: resize the shortest side, then center crop (CLIP-style): open_clip's eval transform,
      torchvision's ``Resize``/``CenterCrop`` rules on a PIL image (PIL, per image; :func:`shortest_crop_pil`).
    - ``square``: resize to size x size, no crop (BLIP-2; PIL, per image).
    - ``center_pad_square``: zero-pad to a centred square of side max(h, w) (:func:`center_pad_square`), then
      as ``square`` (MedSigLIP's serving code; PIL, per image, colour kept).
    - ``pad_square``: MedCLIP's pipeline: grayscale, zero-pad to a square of side max(h, w, image_size),
      resize to size x size (PIL, per image; :func:`pil_pipeline`).
    - ``canvas`` (FLAIR): :func:`canvas_resize`; ``fov_canvas``: FLAIR's field-of-view crop
      (:func:`fov_crop`) first, as its zero-shot and transfer runs load images.
    - ``longest_pad``: GLoRIA's pipeline: grayscale, resize the longest side to ``load_size`` with zero
      padding to a square, then center crop ``image_size`` (PIL, per image).

    Whatever the family does inside its image encoder (GLoRIA's 299 px upsampling) is not preprocessing.
    """

    image_size: int
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    resize: str = "shortest"
    interpolation: str = "bicubic"
    channels: int = 3
    load_size: int | None = None
    version: int = PIPELINE_VERSION  # not a card field: fairbench's implementation (PIPELINE_VERSION)

    def key(self) -> str:
        return card_sha256(self.__dict__)[:16]

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        if self.resize in PIL_PIPELINES:
            return pil_pipeline(self, images)
        if self.resize in ("canvas", "fov_canvas"):
            return canvas_pipeline(self, images)
        s, c = self.image_size, self.channels
        out = torch.empty(len(images), c, s, s)
        mean = torch.tensor(self.mean[:c]).view(-1, 1, 1)
        std = torch.tensor(self.std[:c]).view(-1, 1, 1)
        for i, img in enumerate(images):
            px = resize_crop_pil(img, self)
            # torchvision ToTensor (uint8 -> float32 / 255), then Normalize ((x - mean) / std)
            x = torch.tensor(px, dtype=torch.float32).div_(255.0)  # a copy: PIL's arrays are read-only
            x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
            if x.shape[0] == 1 and c == 3:
                x = x.expand(3, -1, -1)  # grayscale as RGB (open_clip's convert("RGB") after the crop)
            elif x.shape[0] == 3 and c == 1:
                x = x.mean(dim=0, keepdim=True)
            out[i] = (x - mean) / std
        return out


PIL_PIPELINES = ("pad_square", "longest_pad", "chexzero")


def canvas_resize(img: np.ndarray, size: int) -> torch.Tensor:
    """FLAIR's ``ImageScaling(canvas=True)`` after its ``LoadImage`` (jusiro/FLAIR
    ``flair/pretraining/data/transforms.py``): RGB (gray repeated) as float64, divided by 255 when its maximum
    exceeds 1; a square image resized straight to ``size`` x ``size``, any other to ``(int(h / scale),
    int(w / scale))`` with ``scale = max(h, w) / size`` and zero-padded at the right and bottom; torchvision's
    ``Resize`` on the tensor (bilinear, antialiased). Returns ``[3, size, size]`` float64 in [0, 1]."""
    from torchvision.transforms.functional import InterpolationMode, resize

    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    x = np.array(arr, dtype=np.float64)
    if x.max() > 1:
        x /= 255
    x = np.repeat(x[None], 3, axis=0) if x.ndim == 2 else np.transpose(x, (2, 0, 1))
    t = torch.from_numpy(np.ascontiguousarray(x))
    h, w = t.shape[-2:]
    if h == w:
        return resize(t, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    scale = max(h, w) / size
    t = resize(t, [int(h / scale), int(w / scale)], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return torch.nn.functional.pad(t, (0, size - t.shape[-1], 0, size - t.shape[-2]))


def li_threshold(channel: np.ndarray) -> float:
    """Li's minimum cross-entropy threshold of one image channel, by Li and Tam's iteration (1998), as
    scikit-image's ``threshold_li`` runs it on a float image (FLAIR's ``crop_im`` calls it on the red channel of
    the [0, 1] image): values shifted so the smallest is 0; start at the mean; repeat ``t = (m_b - m_f) /
    (ln m_b - ln m_f)`` with ``m_f``, ``m_b`` the means above and at-or-below ``t``, until ``t`` moves by at most
    half the smallest gap between distinct values, or the background mean is 0. Computed from the histogram of
    the distinct values (the same means as over the pixels). A constant channel gives its value."""
    arr = np.asarray(channel)
    if arr.dtype == np.uint8:  # the same distinct values and counts, without sorting every pixel
        hist = np.bincount(arr.ravel(), minlength=256)
        values, counts = np.flatnonzero(hist).astype(np.float64), hist[hist > 0]
    else:
        values, counts = np.unique(arr.astype(np.float64), return_counts=True)
    return _li_iterate(values, counts)


def _li_iterate(values: np.ndarray, counts: np.ndarray) -> float:
    if len(values) == 1:
        return float(values[0])
    low = values[0]
    v = values - low
    weights = counts.astype(np.float64)
    tolerance = float(np.min(np.diff(v))) / 2
    t_next, t_curr = float(np.sum(v * weights) / np.sum(weights)), -2 * tolerance
    while abs(t_next - t_curr) > tolerance:
        t_curr = t_next
        fore = v > t_curr
        mean_fore = np.sum(v[fore] * weights[fore]) / np.sum(weights[fore])
        mean_back = np.sum(v[~fore] * weights[~fore]) / np.sum(weights[~fore])
        if mean_back == 0.0:
            break
        t_next = float((mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore)))
    return t_next + float(low)


def fov_crop(img: np.ndarray) -> np.ndarray:
    """FLAIR's field-of-view crop (jusiro/FLAIR ``flair/pretraining/data/transforms.py``, ``crop_im``, applied by
    ``LoadImage(crop_foreground=True)``, the default of its zero-shot and transfer runs): the red channel (a
    grayscale image's only one) on FLAIR's [0, 1] scale, thresholded at :func:`li_threshold` (``red > t``); the
    largest 8-connected component of that mask (``getLargestCC``: scikit-image's ``label``, full connectivity);
    the image cut to that component's bounding box. An empty mask keeps the whole image (upstream: its
    "largest component" is then the background, the whole frame)."""
    from scipy import ndimage

    arr = np.asarray(img)
    red = arr if arr.ndim == 2 else arr[..., 0]
    scale = 255.0 if red.max() > 1 else 1.0  # LoadImage: divided by 255 when the maximum exceeds 1
    hist = np.bincount(red.ravel(), minlength=256) if red.dtype == np.uint8 else None
    if hist is not None:
        t = _li_iterate(np.flatnonzero(hist) / scale, hist[hist > 0])
    else:
        t = li_threshold(red.astype(np.float64) / scale)
    mask = red.astype(np.float64) / scale > t
    if not mask.any():
        return arr
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows = np.flatnonzero((labels == largest).any(axis=1))
    cols = np.flatnonzero((labels == largest).any(axis=0))
    return arr[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def canvas_pipeline(pre: Preprocessing, images: list[np.ndarray]) -> torch.Tensor:
    """``resize: canvas`` (FLAIR): :func:`canvas_resize`, then ``(x - mean) / std`` (FLAIR: mean 0, std 1);
    ``fov_canvas``: :func:`fov_crop` first."""
    s = pre.image_size
    mean = torch.tensor(pre.mean[:3], dtype=torch.float64).view(-1, 1, 1)
    std = torch.tensor(pre.std[:3], dtype=torch.float64).view(-1, 1, 1)
    out = torch.empty(len(images), 3, s, s)
    for i, img in enumerate(images):
        if pre.resize == "fov_canvas":
            img = fov_crop(img)
        out[i] = ((canvas_resize(img, s) - mean) / std).float()
    return out


def _as_pil(img: np.ndarray) -> Image.Image:
    """A uint8 HxW, HxWx1 or HxWx3 array as a PIL ``L`` or ``RGB`` image (no conversion)."""
    arr = np.ascontiguousarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8 arrays, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"images must be HxW or HxWx3 arrays, got shape {arr.shape}")
    return Image.fromarray(arr)


def center_pad_square(img: np.ndarray) -> np.ndarray:
    """Zero-pad a uint8 HxW or HxWxC array to a square of side max(h, w), the padding split as
    ``(d // 2, d - d // 2)`` before and after (Google-Health/medsiglip ``python/serving/predictor.py``,
    ``_zero_pad_image_to_square``: "method performed in training"). A square image is returned as is."""
    h, w = img.shape[:2]
    if h == w:
        return img
    d = abs(h - w)
    pad = [(d // 2, d - d // 2), (0, 0)] if h < w else [(0, 0), (d // 2, d - d // 2)]
    return np.pad(img, pad + [(0, 0)] * (img.ndim - 2))


def shortest_geometry(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """torchvision ``Resize(size)`` then ``CenterCrop(size)`` (open_clip's eval transform): the resized
    ``(height, width)`` (short side ``size``, long side ``int(size * long / short)``, truncated) and the crop's
    ``(top, left)`` (``int(round((side - size) / 2))``)."""
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    return nh, nw, round((nh - size) / 2.0), round((nw - size) / 2.0)


def resize_crop_pil(img: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """``shortest``/``square``: the uint8 ``size`` x ``size`` (x 3 for RGB input) that open_clip's (BLIP-2's)
    transform makes of ``img`` before ``ToTensor``: PIL's resize of the 8-bit image with the card's filter
    (what torchvision's ``Resize`` calls on a PIL image), then the center crop. ``center_pad_square``: the
    centred zero padding first, then as ``square``."""
    if pre.resize == "center_pad_square":
        img = center_pad_square(img)
    pil = _as_pil(img)
    s = pre.image_size
    if pre.resize in ("square", "center_pad_square"):
        if pil.size != (s, s):
            pil = pil.resize((s, s), resample=_RESAMPLE[pre.interpolation])
        return np.asarray(pil)
    if pre.resize != "shortest":  # pragma: no cover - guarded by the card schema
        raise ValueError(f"not a resize/crop pipeline: {pre.resize}")
    nh, nw, top, left = shortest_geometry(pil.height, pil.width, s)
    if (pil.height, pil.width) != (nh, nw):
        pil = pil.resize((nw, nh), resample=_RESAMPLE[pre.interpolation])
    return np.asarray(pil)[top:top + s, left:left + s]


def _area_axis0(x: np.ndarray, m: int) -> np.ndarray:
    """OpenCV's INTER_AREA shrinking along axis 0 (n -> m rows, n >= m): each output row is the average of
    the input area it covers, computed exactly from the running sum (pixels are constant over their area)."""
    n = x.shape[0]
    s = n / m
    t = np.arange(m + 1) * s
    k = np.minimum(np.floor(t).astype(np.int64), n - 1)
    starts = np.unique(k)  # starts[0] == 0; running sums at these rows only (x[:k].sum(0) for each k)
    seg = np.add.reduceat(x, starts, axis=0)
    run = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(seg[:-1], axis=0)])
    integral = run[np.searchsorted(starts, k)] + (t - k)[:, None] * x[k]
    return (integral[1:] - integral[:-1]) / s


def _area_linear_axis0(x: np.ndarray, m: int) -> np.ndarray:
    """OpenCV's INTER_AREA along axis 0 when it does not shrink both sides (``resize.cpp``: ``sx =
    floor(dx * scale)``, ``fx = (dx + 1) - (sx + 1) / scale`` kept in [0, 1), then linear interpolation)."""
    n = x.shape[0]
    scale, inv = n / m, m / n
    d = np.arange(m)
    sx = np.floor(d * scale).astype(np.int64)
    fx = (d + 1) - (sx + 1) * inv
    fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
    a, b = np.clip(sx, 0, n - 1), np.clip(sx + 1, 0, n - 1)
    return (1.0 - fx)[:, None] * x[a] + fx[:, None] * x[b]


def area_resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV ``cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)`` for a uint8 HxW array."""
    h, w = gray.shape
    if (h, w) == (height, width):
        return gray.copy()
    x = gray.astype(np.float64)
    if h >= height and w >= width:
        out = _area_axis0(_area_axis0(x, height).T, width).T
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    out = _area_linear_axis0(_area_linear_axis0(x, height).T, width).T
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def to_gray_pil(img: np.ndarray) -> Image.Image:
    """A uint8 HxW or HxWx3 array as a PIL ``L`` image (RGB via PIL's ITU-R 601-2 luma)."""
    pil = _as_pil(img)
    return pil if pil.mode == "L" else pil.convert("L")


def pad_square_pil(img: np.ndarray, size: int, resample: str = "bilinear") -> Image.Image:
    """MedCLIP: centre on a black square canvas of side max(h, w, size), then resize to size x size."""
    src = Image.fromarray(np.ascontiguousarray(img if img.ndim == 2 or img.shape[2] != 1 else img[:, :, 0]))
    x, y = src.size
    side = max(size, x, y)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(src, (int((side - x) / 2), int((side - y) / 2)))  # converts RGB to L like upstream
    return canvas.resize((size, size), resample=_RESAMPLE[resample])


def longest_pad_pil(img: np.ndarray, load_size: int, crop: int, resample: str = "area") -> Image.Image:
    """GLoRIA: longest side to ``load_size``, zero padding to a square, center crop ``crop``; grayscale."""
    padded = longest_pad_square(img, load_size, resample)
    top = int(round((load_size - crop) / 2.0))  # torchvision center_crop
    return Image.fromarray(padded[top:top + crop, top:top + crop])


def longest_pad_square(img: np.ndarray, load_size: int, resample: str = "area") -> np.ndarray:
    """GLoRIA before its center crop: grayscale, longest side to ``load_size``, zero padding to a square."""
    gray = to_gray_pil(img)
    h, w = gray.height, gray.width
    if h >= w:  # upstream: max_ind == 0 (taller, or square)
        nh, nw = load_size, int(float(w) * (load_size / float(h)))
    else:
        nh, nw = int(float(h) * (load_size / float(w))), load_size
    if resample == "area":
        resized = area_resize(np.asarray(gray), nh, nw)
    else:
        resized = np.asarray(gray.resize((nw, nh), resample=_RESAMPLE[resample]))
    pad_h, pad_w = load_size - nh, load_size - nw
    return np.pad(resized, [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)],
                  mode="constant", constant_values=0)


def chexzero_pad_pil(img: np.ndarray, size: int) -> Image.Image:
    """CheXzero's ``preprocess(img, desired_size=size)``: longest side to ``size`` (PIL LANCZOS, upstream's
    ``Image.ANTIALIAS``), pasted on a black ``L`` square (RGB converted by the paste, after the resize)."""
    src = _as_pil(img)
    ratio = float(size) / max(src.size)
    new = tuple(int(x * ratio) for x in src.size)
    src = src.resize(new, Image.Resampling.LANCZOS)  # PIL returns a copy when the size is unchanged
    canvas = Image.new("L", (size, size))
    canvas.paste(src, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def _chexzero_tensor(pre: Preprocessing, images: list[np.ndarray]) -> torch.Tensor:
    side = int(pre.load_size or 320)
    x = torch.from_numpy(np.stack([np.asarray(chexzero_pad_pil(img, side), dtype=np.float32) for img in images]))
    x = x.unsqueeze(1).expand(-1, 3, -1, -1)  # np.repeat(img, 3, axis=0): the values stay on 0-255
    mean = torch.tensor(pre.mean[:3], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(pre.std[:3], dtype=torch.float32).view(1, -1, 1, 1)
    x = (x - mean) / std  # Normalize(101.48761, 83.43944) on the 0-255 scale, BEFORE the resize
    if side != pre.image_size:
        x = torch.nn.functional.interpolate(x, size=(pre.image_size, pre.image_size), mode=pre.interpolation,
                                            align_corners=False)
    return x.contiguous()


def pil_pipeline(pre: Preprocessing, images: list[np.ndarray]) -> torch.Tensor:
    """``[n, channels, size, size]`` float32 for the PIL pipelines (``pad_square``, ``longest_pad``,
    ``chexzero``)."""
    if pre.resize == "chexzero":
        return _chexzero_tensor(pre, images)
    s = pre.image_size
    out = np.empty((len(images), s, s), dtype=np.float32)
    for i, img in enumerate(images):
        if pre.resize == "pad_square":
            pil = pad_square_pil(img, s, pre.interpolation)
        elif pre.resize == "longest_pad":
            pil = longest_pad_pil(img, int(pre.load_size or s), s, pre.interpolation)
        else:  # pragma: no cover - guarded by the card schema
            raise ValueError(f"not a PIL pipeline: {pre.resize}")
        out[i] = np.asarray(pil, dtype=np.float32) / 255.0
    x = torch.from_numpy(out).unsqueeze(1)
    mean = torch.tensor(pre.mean[: pre.channels]).view(1, -1, 1, 1)
    std = torch.tensor(pre.std[: pre.channels]).view(1, -1, 1, 1)
    x = x.expand(-1, pre.channels, -1, -1)  # grayscale repeated (GLoRIA: convert("RGB"); MedCLIP: repeat)
    return ((x - mean) / std).contiguous()


@dataclass(frozen=True)
class CacheGeometry:
    """The geometric part of a model's pipeline (resize, pad, crop: everything before ``ToTensor`` and the
    normalisation), as a uint8 square of side :attr:`side` that the same pipeline maps onto itself. The image
    cache stores this, so a model reads from the cache what its own pipeline makes of the full-resolution image:

    - ``pad_square`` (MedCLIP): the padded, resized ``image_size`` square (PIL's output: exact);
    - ``longest_pad`` (GLoRIA): the padded ``load_size`` square before the center crop (exact);
    - ``chexzero``: the padded ``load_size`` (320) square, as CheXzero's HDF5 file stores it (exact: the
      pipeline maps it onto itself);
    - ``shortest`` / ``square`` (open_clip, BLIP-2): the resized and cropped ``image_size`` square (PIL's
      uint8 output, :func:`resize_crop_pil`: exact); ``center_pad_square`` (MedSigLIP): the padded square
      resized (exact for a PIL image processor, which maps the square onto itself);
    - ``canvas`` (FLAIR): the uint8 ``image_size`` canvas (:func:`canvas_resize`, rounded to grey levels),
      which the pipeline resizes onto itself (a square input: resized straight to the same size): within half a
      grey level of the direct pipeline (``fov_canvas`` is not cached: :attr:`cacheable`);
    - ``shortest`` with a ``load_size`` (a transformers image processor: ``size.shortest_edge``, which may exceed
      ``crop_size``, e.g. DINOv2's 256 -> 224; :func:`fairbench.models.hf.hf_preprocessing`): the centre
      ``load_size`` square of the image resized to ``load_size`` (PIL, uint8), cut at transformers'
      ``center_crop`` offsets (``(side - size) // 2``), so the processor's resize leaves it as is and its crop
      takes the same pixels as from the full image.
    """

    pre: Preprocessing

    @property
    def side(self) -> int:
        p = self.pre
        return int(p.load_size or p.image_size) if p.resize in ("longest_pad", "chexzero", "shortest") else int(p.image_size)

    @property
    def cacheable(self) -> bool:
        """False for ``fov_canvas``: FLAIR's field-of-view crop thresholds the whole image, and cropping a cached
        canvas again would not give the same pixels, so ``--image-cache auto`` serves such a model full
        images (no image cache)."""
        return self.pre.resize != "fov_canvas"

    @property
    def gray(self) -> bool:
        """True when the output is grayscale whatever the input (the PIL pipelines)."""
        return self.pre.resize in PIL_PIPELINES

    @property
    def key(self) -> str:
        return f"{self.pre.resize}-{self.pre.interpolation}-{self.side}-{self.pre.key()}"

    def __call__(self, img: np.ndarray) -> np.ndarray:
        p = self.pre
        if p.resize == "pad_square":
            return np.asarray(pad_square_pil(img, p.image_size, p.interpolation), dtype=np.uint8)
        if p.resize == "longest_pad":
            return longest_pad_square(img, self.side, p.interpolation)
        if p.resize == "chexzero":
            return np.asarray(chexzero_pad_pil(img, self.side), dtype=np.uint8)
        if p.resize == "fov_canvas":
            raise ValueError("resize fov_canvas has no cached form (CacheGeometry.cacheable is False)")
        if p.resize == "canvas":
            x = canvas_resize(img, p.image_size).mul(255).round().clamp(0, 255).to(torch.uint8)
            return np.ascontiguousarray(x.permute(1, 2, 0).numpy())
        if p.resize == "shortest" and p.load_size:
            pil, s = _as_pil(img), int(p.load_size)
            nh, nw, _, _ = shortest_geometry(pil.height, pil.width, s)
            if (pil.height, pil.width) != (nh, nw):
                pil = pil.resize((nw, nh), resample=_RESAMPLE[p.interpolation])
            top, left = (nh - s) // 2, (nw - s) // 2
            return np.ascontiguousarray(np.asarray(pil)[top:top + s, left:left + s])
        return np.ascontiguousarray(resize_crop_pil(img, p))
