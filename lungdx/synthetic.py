"""Synthetic chest X-rays: the offline default dataset.

Each image is drawn from a random anatomy (thorax, two lung fields, ribs,
clavicles, heart and mediastinum, spine, diaphragm domes), random exposure,
noise, a slight rotation and a burned-in side marker, plus the finding of its
class:

- COVID: bilateral, peripheral, lower-zone ground-glass opacities (faint, textured);
- Lung_Opacity: one dense focal consolidation, anywhere in either lung;
- Viral Pneumonia: diffuse bilateral perihilar interstitial streaks;
- Normal: none.

Findings are spatial by design: after drawing, every image is rescaled to a
mean and contrast drawn independently of its class, so global brightness and
contrast carry no label, and a classifier has to find *where* the finding is.

Written in the Kaggle layout: <Class>/images/<Class>-<n>.png, lung masks in
<Class>/masks/ and, beyond Kaggle, lesion masks in <Class>/lesions/ (empty for
Normal) to check Grad-CAM against ground truth. Every image is a pure function
of (seed, class, index), so generation is deterministic and parallel, and the same bytes on
every x86-64 CPU: exp, powers and sines come from lungdx.portable_math, the blur's kernel and
the rotation's matrix are computed here, and OpenCV runs one code path (lungdx.opencv).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import portable_math as pm
from .images import write_png
from .opencv import cv2
from .workers import cpu_count, map_in_workers

if TYPE_CHECKING:
    from .workers import Progress

CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
MARKER_TEXTS = ("R", "L")
SCANNER_TEXTS = ("PORTABLE", "AP", "PA", "SUPINE", "ERECT")


def _ellipse(size, center, axes, angle=0.0):
    """Filled ellipse as a float mask; center/axes in pixels."""
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(
        m,
        (int(center[0]), int(center[1])),
        (max(1, int(axes[0])), max(1, int(axes[1]))),
        angle,
        0,
        360,
        1,
        -1,
        lineType=cv2.LINE_AA,
    )
    return m.astype(np.float32)


def _gaussian(x, sigma):
    """exp(-x^2 / 2 sigma^2), float64, the same bits on every CPU."""
    return pm.exp(-((np.asarray(x, np.float64) / sigma) ** 2) / 2)


def _blur(a, sigma):
    """A Gaussian blur as cv2.GaussianBlur does it for float images (cvRound(8 sigma + 1) | 1 taps,
    borders reflected), its kernel computed here: OpenCV's own comes from the C library's exp."""
    if sigma <= 0:
        return a
    radius = (int(round(sigma * 8 + 1)) | 1) // 2  # round() rounds half to even, as cvRound does
    kernel = _gaussian(np.arange(-radius, radius + 1), sigma)
    kernel = kernel / math.fsum(kernel)  # fsum: exactly rounded, so no summation order to differ
    return cv2.sepFilter2D(a, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)


def _gaussian_blob(size, cx, cy, sx, sy):
    """A 2-D Gaussian of peak 1, float32: the product of two 1-D ones."""
    pixels = np.arange(size)
    return np.outer(_gaussian(pixels - cy, sy), _gaussian(pixels - cx, sx)).astype(np.float32)


def _rotation(center, degrees, scale):
    """cv2.getRotationMatrix2D's matrix, its sine and cosine from lungdx.portable_math."""
    angle = degrees * pm.PI / 180
    alpha, beta = float(pm.cos(angle)) * scale, float(pm.sin(angle)) * scale
    cx, cy = center
    return np.array([[alpha, beta, (1 - alpha) * cx - beta * cy], [-beta, alpha, beta * cx + (1 - alpha) * cy]])


def _anatomy(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Return (image, lung_mask, lungs) of one random thorax; lungs holds each lung's geometry.
    Each part draws from `rng` in turn, in this order: the same seed, the same thorax."""
    img = np.full((s, s), 0.05, np.float32)
    body, tissue = _thorax(rng, s)
    img += tissue
    lungs, lung_mask, fields = _lung_fields(rng, s)
    img -= fields
    soft, dense = _heart_and_mediastinum(rng, s)
    img += dense
    lung_mask = lung_mask * (1 - soft)  # like Kaggle's masks: the heart shadow is not lung
    img += _spine(rng, s)
    img += _ribs_and_clavicles(rng, s, body)
    return img, (lung_mask > 0.5).astype(np.float32), lungs


def _thorax(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(the body's outline, the brightness its soft tissue adds): thorax, shoulders and neck."""
    body = _ellipse(s, (s * rng.uniform(0.48, 0.52), s * 0.60), (s * rng.uniform(0.40, 0.46), s * 0.58))
    shoulders = _ellipse(s, (s * 0.5, s * 0.22), (s * 0.50, s * 0.14))
    neck = np.zeros((s, s), np.float32)
    cv2.rectangle(neck, (int(s * 0.40), 0), (int(s * 0.60), int(s * 0.2)), 1, -1)
    tissue = np.clip(body + shoulders + neck, 0, 1)
    return body, _blur(tissue, s * 0.02) * rng.uniform(0.40, 0.50)


def _lung_fields(rng: np.random.Generator, s: int) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(each lung's geometry, their mask, the brightness they take away): two dark fields. Image
    left is the patient's right lung."""
    cy = s * rng.uniform(0.45, 0.50)
    ay = s * rng.uniform(0.22, 0.27)
    lungs, lung_mask = [], np.zeros((s, s), np.float32)
    for side in (-1, 1):
        dx = s * rng.uniform(0.16, 0.20)
        ax = s * rng.uniform(0.11, 0.14)
        c = (s * 0.5 + side * dx, cy + rng.uniform(-0.02, 0.02) * s)
        a = (ax, ay * (0.95 if side > 0 else 1.0))  # left dome sits a bit lower under the heart
        m = _ellipse(s, c, a, angle=side * rng.uniform(2, 8))
        lungs.append({"side": side, "center": c, "axes": a})
        lung_mask = np.maximum(lung_mask, m)
    return lungs, lung_mask, _blur(lung_mask, s * 0.012) * rng.uniform(0.24, 0.32)


def _heart_and_mediastinum(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(their shape, the brightness they add): heart (patient's left = image right) and
    mediastinum, dense, overlapping the lungs."""
    heart = _ellipse(
        s,
        (s * rng.uniform(0.53, 0.58), s * rng.uniform(0.60, 0.66)),
        (s * rng.uniform(0.11, 0.15), s * rng.uniform(0.09, 0.12)),
        angle=rng.uniform(-20, 0),
    )
    mediastinum = np.zeros((s, s), np.float32)
    cv2.rectangle(mediastinum, (int(s * 0.45), int(s * 0.15)), (int(s * 0.55), int(s * 0.8)), 1, -1)
    soft = np.clip(heart + mediastinum, 0, 1)
    return soft, _blur(soft, s * 0.015) * rng.uniform(0.25, 0.32)


def _spine(rng: np.random.Generator, s: int) -> np.ndarray:
    """The brightness the spine adds: vertebrae stacked down the midline."""
    spine = np.zeros((s, s), np.float32)
    y, h = s * 0.05, s * 0.035
    while y < s * 0.95:
        cv2.rectangle(spine, (int(s * 0.47), int(y)), (int(s * 0.53), int(y + h)), 1, -1)
        y += h * rng.uniform(1.25, 1.4)
    return _blur(spine, 1.0) * 0.08


def _ribs_and_clavicles(rng: np.random.Generator, s: int, body: np.ndarray) -> np.ndarray:
    """The brightness the bones add: ribs, curved bands across each hemithorax (inside the
    `body`), and clavicles on top."""
    ribs = np.zeros((s, s), np.float32)
    thick = max(1, int(s * 0.012))
    n_ribs = int(rng.integers(8, 11))
    for side in (-1, 1):
        for k in range(n_ribs):
            y0 = s * (0.22 + k * 0.055 + rng.uniform(-0.01, 0.01))
            xs = np.linspace(s * 0.5 + side * s * 0.04, s * 0.5 + side * s * 0.38, 24)
            t = np.abs(xs - s * 0.5) / (s * 0.38)
            ys = y0 - s * 0.06 * pm.sin(pm.PI * t * 0.9) + s * 0.05 * t**2
            pts = np.stack([xs, ys], 1).astype(np.int32)
            cv2.polylines(ribs, [pts], False, 1, thick, lineType=cv2.LINE_AA)
    clav = np.zeros((s, s), np.float32)
    for side in (-1, 1):
        p0 = (int(s * (0.5 + side * 0.05)), int(s * rng.uniform(0.20, 0.23)))
        p1 = (int(s * (0.5 + side * rng.uniform(0.28, 0.34))), int(s * rng.uniform(0.14, 0.18)))
        cv2.line(clav, p0, p1, 1, max(2, int(s * 0.02)), lineType=cv2.LINE_AA)
    return _blur(ribs * body, 1.2) * rng.uniform(0.08, 0.13) + _blur(clav, 1.5) * 0.18


def _finding(cls, rng, s, lungs, lung_mask):
    """The class's opacity layer (0 where healthy), confined to the lungs."""
    layer = np.zeros((s, s), np.float32)
    if cls == "COVID":
        # Ground glass: faint, textured, in the outer and lower part of both lungs.
        texture = _blur(rng.standard_normal((s, s)).astype(np.float32), s * 0.008)
        texture = 0.6 + 0.4 * texture / (np.abs(texture).max() + 1e-6)
        for lung in lungs:
            (cx, cy), (ax, ay) = lung["center"], lung["axes"]
            for _ in range(int(rng.integers(2, 4))):
                bx = cx + lung["side"] * ax * rng.uniform(0.25, 0.7)
                by = cy + ay * rng.uniform(0.2, 0.65)
                sx, sy = s * rng.uniform(0.03, 0.05), s * rng.uniform(0.035, 0.06)
                layer = np.maximum(layer, _gaussian_blob(s, bx, by, sx, sy) * rng.uniform(0.20, 0.28))
        layer *= texture
    elif cls == "Lung_Opacity":
        # One dense consolidation with a fairly sharp border, in either lung.
        lung = lungs[int(rng.integers(0, 2))]
        (cx, cy), (ax, ay) = lung["center"], lung["axes"]
        bx = cx + ax * rng.uniform(-0.5, 0.5)
        by = cy + ay * rng.uniform(-0.55, 0.55)
        sx, sy = s * rng.uniform(0.035, 0.055), s * rng.uniform(0.035, 0.06)
        blob = np.clip(_gaussian_blob(s, bx, by, sx, sy) * 1.8, 0, 1)
        layer = blob * rng.uniform(0.32, 0.42)
    elif cls == "Viral Pneumonia":
        # Interstitial streaks radiating from each hilum.
        streaks = np.zeros((s, s), np.float32)
        for lung in lungs:
            (cx, cy), (ax, ay) = lung["center"], lung["axes"]
            hx, hy = cx - lung["side"] * ax * 0.55, cy + ay * 0.05
            for _ in range(int(rng.integers(14, 22))):
                angle = rng.uniform(-0.8, 0.8) * pm.PI / 2 + (0 if lung["side"] > 0 else pm.PI)
                length = s * rng.uniform(0.07, 0.16)
                start = rng.uniform(0.0, 0.3) * length
                cos, sin = float(pm.cos(angle)), float(pm.sin(angle))
                p0 = (int(hx + cos * start), int(hy + sin * start))
                p1 = (int(hx + cos * length), int(hy + sin * length))
                cv2.line(streaks, p0, p1, rng.uniform(0.6, 1.0), max(1, int(s * 0.006)), lineType=cv2.LINE_AA)
        layer = _blur(streaks, s * 0.004) * rng.uniform(0.22, 0.30)
    return layer * _blur(lung_mask, 1.5)


def generate_image(seed: int, cls: str, index: int, size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic X-ray: (image uint8, lung mask uint8 0/255, lesion mask uint8 0/255)."""
    rng = np.random.default_rng([seed, CLASSES.index(cls), index])
    s = size
    img, lung_mask, lungs = _anatomy(rng, s)
    layer = _finding(cls, rng, s, lungs, lung_mask)
    img += layer
    lesion = ((layer > 0.25 * layer.max()) if layer.max() > 0 else np.zeros_like(layer, bool)).astype(np.float32)
    img, lung_mask, lesion = _positioned(rng, s, img, lung_mask, lesion)
    out = _exposed(rng, s, img)
    _burn_in_markers(rng, s, out)
    return out, (lung_mask > 0.5).astype(np.uint8) * 255, (lesion > 0.5).astype(np.uint8) * 255


def _positioned(
    rng: np.random.Generator, s: int, img: np.ndarray, lung_mask: np.ndarray, lesion: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slight rotation, scale and shift of the whole radiograph (patient positioning), its masks
    moved with it."""
    m = _rotation((s / 2, s / 2), rng.uniform(-7, 7), rng.uniform(0.88, 1.08))
    m[:, 2] += rng.uniform(-0.07, 0.07, 2) * s
    img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderValue=0.05)
    lung_mask = cv2.warpAffine(lung_mask, m, (s, s), flags=cv2.INTER_NEAREST)
    lesion = cv2.warpAffine(lesion, m, (s, s), flags=cv2.INTER_NEAREST)
    return img, lung_mask, lesion


def _exposed(rng: np.random.Generator, s: int, img: np.ndarray) -> np.ndarray:
    """The film, uint8: gamma, then a class-independent target mean and contrast, noise, blur."""
    img = pm.power(np.clip(img, 0, 1), rng.uniform(0.8, 1.25)).astype(np.float32)
    img = (img - img.mean()) / (img.std() + 1e-6) * rng.uniform(0.16, 0.22) + rng.uniform(0.38, 0.50)
    img += rng.standard_normal((s, s)).astype(np.float32) * rng.uniform(0.01, 0.03)
    img = _blur(img, rng.uniform(0.3, 0.8))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _burn_in_markers(rng: np.random.Generator, s: int, out: np.ndarray) -> None:
    """Burned-in markers on the film `out`, independent of the class (as on real films)."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, s / 320
    corner = int(rng.integers(0, 2))
    x = int(s * (0.05 if corner == 0 else 0.85))
    cv2.putText(
        out,
        MARKER_TEXTS[int(rng.integers(0, 2))],
        (x, int(s * 0.12)),
        font,
        scale * 1.2,
        255,
        max(1, int(s / 128)),
        cv2.LINE_AA,
    )
    if rng.random() < 0.5:
        text = SCANNER_TEXTS[int(rng.integers(0, len(SCANNER_TEXTS)))]
        cv2.putText(out, text, (int(s * 0.05), int(s * 0.95)), font, scale * 0.6, 230, 1, cv2.LINE_AA)


def _write_one(args):
    out_dir, seed, cls, index, size = args
    img, lung, lesion = generate_image(seed, cls, index, size)
    name = f"{cls}-{index + 1}.png"
    for sub, arr in (("images", img), ("masks", lung), ("lesions", lesion)):
        write_png(Path(out_dir) / cls / sub / name, arr)


def generate_dataset(
    out_dir: str | os.PathLike,
    per_class: int,
    seed: int,
    size: int,
    workers: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Write per_class images of each class in the Kaggle layout under out_dir (each with its lung
    and lesion mask); returns how many files."""
    out_dir = Path(out_dir)
    for cls in CLASSES:
        for sub in ("images", "masks", "lesions"):
            (out_dir / cls / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(str(out_dir), seed, cls, i, size) for cls in CLASSES for i in range(per_class)]
    results = map_in_workers(_write_one, jobs, workers or cpu_count(), chunksize=16)
    for _ in progress(results, total=len(jobs), desc="synthetic") if progress else results:
        pass
    return len(jobs) * 3  # an image, its lung mask, its lesion mask
