"""Reading any X-ray image file the same way everywhere (sample, prepare, predict).

Policy, documented in the README:
- any PNG/JPEG/BMP/TIFF that OpenCV decodes: 8 or 16 bit, gray, RGB or RGBA;
- 16-bit is scaled to 8-bit by its full range (value * 255 / 65535), so a
  16-bit export of an 8-bit image gives the same pixels back;
- colour is converted to luminance; an alpha channel is dropped (X-rays carry
  no transparency; exporters add it as fully opaque);
- non-square images are padded to a square with black, centred, so the whole
  thorax survives and the anatomy is not stretched; then resized with
  INTER_AREA when shrinking (no aliasing) and INTER_LINEAR when enlarging.
  Masks use the same padding and INTER_NEAREST, so they stay binary.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# What load_for_model does, recorded in every saved model (lungdx.model_file): a model is only
# ever fed images prepared the way its training images were. Change the name if the steps change.
PREPROCESSING = "gray8-pad-square-v1"
PREPROCESSING_STEPS = ("decode to 8-bit gray (16-bit scaled by 255/65535, colour to luminance, alpha dropped); "
                       "pad to a square with black, centred; resize to the input size (INTER_AREA when "
                       "shrinking, INTER_LINEAR when enlarging); pixel values 0..255 as float32, unscaled: "
                       "the model's first layer scales them")
MIN_SIDE = 16

cv2.setNumThreads(1)  # we parallelise across images ourselves


class UnreadableImage(Exception):
    """A file that is not a decodable image; carries the reason."""


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Decode `path` to a 2-D uint8 array, or raise UnreadableImage with a reason."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror}") from None
    return decode_gray(data)


def decode_gray(data) -> np.ndarray:
    """Decode encoded image bytes to a 2-D uint8 array, or raise UnreadableImage."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if data.size == 0:
        raise UnreadableImage("empty file (0 bytes)")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UnreadableImage("not a decodable image (truncated, corrupt or not an image)")
    return to_gray_uint8(img)


def to_gray_uint8(img: np.ndarray) -> np.ndarray:
    """Convert a decoded OpenCV image (any depth, 1/3/4 channels) to 2-D uint8."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        code = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}.get(img.shape[2])
        if code is None:
            raise UnreadableImage(f"unsupported number of channels: {img.shape[2]}")
        img = cv2.cvtColor(img, code)
    if img.ndim != 2:
        raise UnreadableImage(f"unsupported image shape {img.shape}")
    if min(img.shape) < MIN_SIDE:
        raise UnreadableImage(f"too small ({img.shape[1]}x{img.shape[0]}); need at least {MIN_SIDE}x{MIN_SIDE}")
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return np.ascontiguousarray(img)


def pad_to_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    side = max(h, w)
    if h == w:
        return img
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=0)


def resize_square(img: np.ndarray, size: int, is_mask: bool = False) -> np.ndarray:
    """Pad to square, then resize to size x size (see the module docstring for why)."""
    img = pad_to_square(img)
    if img.shape[0] == size:
        out = img
    elif is_mask:
        out = cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)
    else:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
        out = cv2.resize(img, (size, size), interpolation=interp)
    if is_mask:
        out = cv2.threshold(out, 127, 255, cv2.THRESH_BINARY)[1]  # > 127 -> 255, else 0
    return out


def load_for_model(path: str | os.PathLike, size: int) -> np.ndarray:
    """The exact preprocessing of training data: read, gray uint8, pad, resize."""
    return resize_square(read_gray(path), size)


def load_mask(path: str | os.PathLike, size: int) -> np.ndarray:
    return resize_square(read_gray(path), size, is_mask=True)


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV only fails here on invalid arrays
        raise ValueError(f"could not encode {path} as PNG")
    Path(path).write_bytes(buf.tobytes())
