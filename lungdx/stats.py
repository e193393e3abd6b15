"""How sure a number on the test split is: bootstrap intervals, calibration, paired comparisons.

A test split is a sample of images, so its accuracy is an estimate; these functions say how far
it could move on another sample of the same size. All of it is numpy on label arrays, vectorised
over resamples, so 2000 resamples of a few thousand images take a fraction of a second.

- Statistics (`accuracy`, `f1_macro`, `split_statistics`) take labels of shape (..., n) and give
  one value per leading index: the same function scores the split (n,) and every resample (r, n).
- `bootstrap_interval`: the percentile bootstrap over test images (resample the images with
  replacement, recompute, take the middle `level` of the values).
- `expected_calibration_error`, `reliability_table`: whether the top probability means what it says.
- `mcnemar`, `paired_bootstrap`: two models on the same test images, for `lungdx compare`.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from numpy.typing import ArrayLike

# 2000 resamples: a 95% percentile bound then moves by about 2-3% of the interval's width from one
# seed to another (measured at 160 to 2000 test images; Efron & Tibshirani ask for >= 1000 for
# percentile intervals), and all of a split's intervals cost well under a second.
RESAMPLES = 2000
LEVEL = 0.95
ECE_BINS = 15  # Guo et al. (2017), "On calibration of modern neural networks"
CHUNK = 1 << 22  # indices drawn at a time (32 MiB of int64), whatever the split's size


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices (..., k, k), rows actual, of labels (..., n): one bincount for all resamples."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    lead = y_true.shape[:-1]
    rows = math.prod(lead)
    codes = (y_true.reshape(rows, -1) * k + y_pred.reshape(rows, -1)) + np.arange(rows)[:, None] * (k * k)
    return np.bincount(codes.ravel(), minlength=rows * k * k).reshape(*lead, k, k)


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den, `empty` where den is 0 (a rate with nothing to count)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), empty)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Share of correct labels along the last axis."""
    return (np.asarray(y_true) == np.asarray(y_pred)).mean(axis=-1)


def _f1_macro(cm: np.ndarray, labels: Sequence[int] | None = None) -> np.ndarray:
    """Macro F1 of confusion matrices over `labels` (default all k), averaged over the classes
    present or predicted: as sklearn's f1_score(average='macro', labels=<those classes>). A class
    a resample neither has nor predicts has no F1; counting it as 0 (sklearn's zero_division=0
    with labels=all k) would pull the intervals down for a rare class that is always right."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    f1 = _ratio(2 * tp, cm.sum(-1) + cm.sum(-2), np.nan)
    f1 = f1 if labels is None else f1[..., list(labels)]
    defined = ~np.isnan(f1)
    return _ratio(np.where(defined, f1, 0).sum(-1), defined.sum(-1), np.nan)


def f1_macro(y_true: np.ndarray, y_pred: np.ndarray, k: int, labels: Sequence[int] | None = None) -> np.ndarray:
    """Macro F1 over k classes along the last axis (k given: a resample may miss a class), or over
    the classes `labels` only (those an external dataset has; predictions of the others still count)."""
    return _f1_macro(confusion(y_true, y_pred, k), labels)


def split_statistics(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """From one confusion matrix: accuracy, macro F1, each class's sensitivity, then each class's
    specificity (..., 2 + 2k); a class with no positives (negatives) has a nan sensitivity
    (specificity)."""
    cm = confusion(y_true, y_pred, k)
    tp, actual, predicted = np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-1), cm.sum(-2)
    n = cm.sum((-2, -1))[..., None]
    accuracy_ = _ratio(tp.sum(-1, keepdims=True), n, np.nan)
    sensitivity = _ratio(tp, actual, np.nan)
    specificity = _ratio(n - actual - predicted + tp, n - actual, np.nan)
    return np.concatenate([accuracy_, _f1_macro(cm)[..., None], sensitivity, specificity], axis=-1)


def _index_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The resamples' indices, a block of rows at a time, so memory stays about CHUNK whatever n is;
    one generator draws them in order, so the blocks' size does not change the draws."""
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK // max(n, 1))
    for start in range(0, resamples, rows):
        shape = (min(rows, resamples - start), n)
        yield rng.integers(0, n, size=shape) if n else np.zeros(shape, np.int64)


def bootstrap_indices(n: int, resamples: int = RESAMPLES, *, seed: int) -> np.ndarray:
    """Which test images each resample draws (row r: resample r), seeded, so the same seed gives
    the same resamples for every statistic and every model."""
    return np.concatenate(list(_index_chunks(n, resamples, seed)))


def bootstrap_values(
    statistic: Callable[..., np.ndarray], *arrays: ArrayLike, resamples: int = RESAMPLES, seed: int
) -> np.ndarray:
    """statistic(*arrays) on every resample of the test images, (resamples, ...); the arrays are
    resampled together (the same images), a block of resamples at a time."""
    columns = [np.asarray(a) for a in arrays]
    return np.concatenate(
        [statistic(*(a[idx] for a in columns)) for idx in _index_chunks(len(columns[0]), resamples, seed)]
    )


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The middle `level` of bootstrap values along axis 0; resamples where a value is undefined
    (nan) are left out, and nan where all are."""
    values = np.asarray(values, float)
    tail = 100 * (1 - level) / 2
    low, high = np.full(values.shape[1:], np.nan), np.full(values.shape[1:], np.nan)
    defined = ~np.isnan(values).all(axis=0)
    if defined.any():
        low[defined], high[defined] = np.nanpercentile(values[:, defined], [tail, 100 - tail], axis=0)
    return low, high


def bootstrap_interval(
    statistic: Callable[..., np.ndarray],
    *arrays: ArrayLike,
    resamples: int = RESAMPLES,
    seed: int,
    level: float = LEVEL,
) -> tuple[float, float]:
    """The percentile bootstrap interval of statistic(*arrays) over test images (the arrays'
    rows): how far the number could move on another test split of the same size from the same
    population."""
    low, high = percentile_interval(bootstrap_values(statistic, *arrays, resamples=resamples, seed=seed), level)
    return float(low), float(high)


def split_intervals(
    y_true: ArrayLike, y_pred: ArrayLike, k: int, resamples: int = RESAMPLES, *, seed: int, level: float = LEVEL
) -> dict:
    """accuracy, f1_macro (value, low, high) and per class sensitivity, specificity (arrays of k
    values, lows, highs) of a test split, all from the same resamples."""
    value = split_statistics(np.asarray(y_true), np.asarray(y_pred), k)
    low, high = percentile_interval(
        bootstrap_values(lambda t, p: split_statistics(t, p, k), y_true, y_pred, resamples=resamples, seed=seed), level
    )
    overall = {
        name: (float(value[i]), float(low[i]), float(high[i])) for i, name in enumerate(("accuracy", "f1_macro"))
    }
    per_class = {
        name: (value[s], low[s], high[s])
        for name, s in (("sensitivity", slice(2, 2 + k)), ("specificity", slice(2 + k, 2 + 2 * k)))
    }
    return {**overall, **per_class}


def mean_interval(
    values: ArrayLike, resamples: int = RESAMPLES, *, seed: int, level: float = LEVEL
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of per-image values (nan ignored): e.g. the
    Grad-CAM energy share inside the lungs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of nan values only: its mean is nan
        return bootstrap_interval(
            lambda v: np.nanmean(v, axis=-1), np.asarray(values, float), resamples=resamples, seed=seed, level=level
        )


def reliability_table(y_true: ArrayLike, probs: ArrayLike, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-label confidence against accuracy in equal-width bins (lower, upper] of [0, 1], non-empty
    bins only: bin (0-based), confidence (mean), accuracy, count; a reliability diagram's points."""
    probs = np.asarray(probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    which = np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1], right=True)
    count = np.bincount(which, minlength=bins)
    used = np.flatnonzero(count)
    return {
        "bin": used,
        "count": count[used],
        "confidence": np.bincount(which, confidence, bins)[used] / count[used],
        "accuracy": np.bincount(which, correct, bins)[used] / count[used],
    }


def expected_calibration_error(y_true: ArrayLike, probs: ArrayLike, bins: int = ECE_BINS) -> float:
    """ECE: the gap between top-label confidence and accuracy, averaged over equal-width bins
    weighted by their share of images (0: a 0.8 means right 80% of the time); nan for no images."""
    table = reliability_table(y_true, probs, bins)
    n = table["count"].sum()
    return float(np.abs(table["accuracy"] - table["confidence"]) @ table["count"] / n) if n else float("nan")


def binomial_two_sided(successes: int, n: int) -> float:
    """Exact two-sided p-value of `successes` in n fair coin flips (doubling the smaller tail),
    summed in exact integers (no overflow at any n); a p-value below about 1e-308 comes out as
    0.0, the smallest float being that."""
    m, term, tail = min(successes, n - successes), 1, 0
    for i in range(m + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> dict[str, float]:
    """Exact McNemar test of two models on the same images: only images they disagree on count.
    b01: A wrong and B right; b10: A right and B wrong; p_value: two-sided, of b01 against b10
    as fair coin flips (no difference in accuracy)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b01, b10 = int((~a & b).sum()), int((a & ~b).sum())
    return {"b01": b01, "b10": b10, "p_value": binomial_two_sided(b01, b01 + b10)}


def paired_bootstrap(
    y_true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    resamples: int = RESAMPLES,
    *,
    seed: int,
    level: float = LEVEL,
) -> dict[str, float]:
    """B's statistic minus A's on the same test images: the difference, its percentile interval
    and a two-sided bootstrap p-value (twice the share of resampled differences on the other
    side of 0, +1 smoothed, so never below 2 / (resamples + 1))."""
    y_true, pred_a, pred_b = (np.asarray(x) for x in (y_true, pred_a, pred_b))
    diffs = bootstrap_values(
        lambda t, a, b: statistic(t, b) - statistic(t, a), y_true, pred_a, pred_b, resamples=resamples, seed=seed
    )
    low, high = percentile_interval(diffs, level)
    other_side = int(min((diffs <= 0).sum(), (diffs >= 0).sum()))
    return {
        "difference": float(statistic(y_true, pred_b) - statistic(y_true, pred_a)),
        "lower": float(low),
        "upper": float(high),
        "p_value": min(1.0, 2 * (other_side + 1) / (resamples + 1)),
    }
