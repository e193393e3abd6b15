"""Finding the lungs on an X-ray with a lung segmenter (the segment stage's U-Net): drawing
them as a mask at the image's own size, and saying when a drawing is not plausible lungs.
Shared by the segment stage, lungdx predict and the external check: each draws lungs the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import LungdxError
from .images import resize_square
from .opencv import cv2

if TYPE_CHECKING:
    import keras

THRESHOLD = 0.5  # lung where the U-Net's probability exceeds it
# Plausible lungs (real masks: 17-59% of an image, two lungs): drawings outside are listed and
# their images used whole.
MIN_LUNG_SHARE, MAX_LUNG_SHARE = 0.08, 0.75
MIN_SECOND_LUNG = 0.1  # the smaller lung, as a share of the larger: under it, "one lung"


def lungs_from_probabilities(probability: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A U-Net's square output back at the image's own (height, width) as a 0/255 mask: upsampled,
    the square's padding cut off (lungdx.images pads centred), thresholded, and only the two largest
    connected regions kept (the lungs; specks elsewhere are noise)."""
    height, width = shape
    side = max(height, width)
    up = cv2.resize(np.asarray(probability, np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    top, left = (side - height) // 2, (side - width) // 2
    mask = (up[top : top + height, left : left + width] > THRESHOLD).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n > 3:
        keep = 1 + np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1][:2]
        mask = np.isin(labels, keep).astype(np.uint8)
    return mask * 255


def draw_lungs(segmenter: keras.Model, images: list[np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
    """The lungs of each image (2-D uint8 of any size), as 0/255 masks at each image's size."""
    size = segmenter.input_shape[1]
    masks = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = np.stack([resize_square(img, size) for img in chunk]).astype(np.float32)[..., None]
        probability = np.asarray(segmenter(x, training=False))[..., 0]
        if not np.isfinite(probability).all():
            raise LungdxError(
                "the lung segmenter's outputs are not finite: its weights are broken; retrain it "
                "with dvc repro -f segment"
            )
        masks += [lungs_from_probabilities(p, img.shape) for p, img in zip(probability, chunk, strict=True)]
    return masks


def lung_problem(mask: np.ndarray) -> str:
    """Why drawn lungs (0/255) are not plausible lungs, or "" when they are."""
    share = np.count_nonzero(mask) / mask.size
    if share == 0:
        return "no lungs found (empty mask)"
    if share < MIN_LUNG_SHARE:
        return f"a sliver, {share:.1%} of the image (lungs cover 17-59%)"
    if share > MAX_LUNG_SHARE:
        return f"most of the image, {share:.0%} (lungs cover 17-59%)"
    areas = np.sort(cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8))[2][1:, cv2.CC_STAT_AREA])[::-1]
    if len(areas) < 2 or areas[1] < MIN_SECOND_LUNG * areas[0]:
        return "one lung, no second lung region"
    return ""


def find_lungs(segmenter: keras.Model, image: np.ndarray) -> tuple[np.ndarray, str]:
    """(the lungs the segmenter draws on one image, as a 0/255 mask at its size; why they are
    implausible, or "")."""
    drawn = draw_lungs(segmenter, [image])[0]
    return drawn, lung_problem(drawn)


def overlap(drawn: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(Dice, IoU) of two 0/255 masks of one shape."""
    a, b = drawn > 0, true > 0
    inter, total = np.count_nonzero(a & b), np.count_nonzero(a) + np.count_nonzero(b)
    union = total - inter
    return (2 * inter / total if total else 1.0), (inter / union if union else 1.0)
