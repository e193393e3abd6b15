"""Classification metrics, shared by the model's evaluation and the baseline.

Two views of one computation:
- `classification_metrics` -- everything a reader of a report wants: per-class
  precision/recall/F1, sensitivity and specificity with their intervals, the confusion
  matrix, test-set size, the bootstrap's settings;
- `headline` -- the few numbers people compare across experiments, the only content
  of the files dvc.yaml declares as metrics (`dvc exp show`, `dvc metrics diff`, VS Code),
  with the same keys for the model and the baseline so columns line up: accuracy, f1_macro,
  roc_auc_ovr, then the 95% intervals of the first two ({lower, upper}: columns
  accuracy_ci.lower, ...) and the expected calibration error (see lungdx.stats).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn import metrics as skm

from .stats import ECE_BINS, LEVEL, RESAMPLES, expected_calibration_error, split_intervals

if TYPE_CHECKING:
    from collections.abc import Sequence

    Number = float | np.floating | np.ndarray  # a float, a numpy scalar, or a 0-d array

HEADLINE = ("accuracy", "f1_macro", "roc_auc_ovr", "accuracy_ci", "f1_macro_ci", "ece")


def r6(x: Number | None) -> float | None:
    """Rounded so JSON diffs stay readable; None for an undefined value (nan)."""
    return None if x is None or np.isnan(x) else round(float(x), 6)


def bounds(low: Number | None, high: Number | None) -> dict[str, float | None]:
    """An interval as {lower, upper}: two columns that sort in reading order in dvc metrics show."""
    return {"lower": r6(low), "upper": r6(high)}


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    *,
    seed: int,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    bins: int = ECE_BINS,
) -> dict:
    """Headline numbers first (HEADLINE), then f1_weighted, n_test, per_class, the confusion matrix
    and the settings of the intervals (a percentile bootstrap over test images, seeded by `seed`)
    and of the ECE."""
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    ci = split_intervals(y_true, y_pred, len(classes), resamples, seed=seed, level=level)
    return {
        "accuracy": r6(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": r6(skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "roc_auc_ovr": r6(_roc_auc(y_true, probs, labels)),
        "accuracy_ci": bounds(*ci["accuracy"][1:]),
        "f1_macro_ci": bounds(*ci["f1_macro"][1:]),
        "ece": r6(expected_calibration_error(y_true, probs, bins)),
        "f1_weighted": r6(skm.f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0)),
        "n_test": int(len(y_true)),
        "per_class": _per_class(y_true, y_pred, classes, ci),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "intervals": {
            "method": "percentile bootstrap",
            "over": "test images",
            "resamples": resamples,
            "seed": seed,
            "level": level,
        },
        "calibration": {"ece_bins": bins, "binning": "equal-width", "confidence": "top label"},
    }


def _roc_auc(y_true: np.ndarray, probs: np.ndarray, labels: list[int]) -> float:
    """One-vs-rest ROC AUC (of the second class with two); nan where a class is absent."""
    try:
        if len(labels) == 2:
            return skm.roc_auc_score(y_true, probs[:, 1])
        return skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels)
    except ValueError:  # a class absent from the test split has no ROC curve
        return float("nan")


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], ci: dict) -> dict[str, dict]:
    """Each class's precision, recall, F1, support, and sensitivity and specificity with their intervals."""
    labels = list(range(len(classes)))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    sens, spec = ci["sensitivity"], ci["specificity"]
    return {
        c: {
            "precision": r6(p[i]),
            "recall": r6(r[i]),
            "f1": r6(f[i]),
            "support": int(s[i]),
            "sensitivity": r6(sens[0][i]),
            "sensitivity_ci": bounds(sens[1][i], sens[2][i]),
            "specificity": r6(spec[0][i]),
            "specificity_ci": bounds(spec[1][i], spec[2][i]),
        }
        for i, c in enumerate(classes)
    }


def _number(value) -> bool:
    """A number, or a group of numbers ({lower, upper}): what a metrics file may hold."""
    if isinstance(value, dict):
        return bool(value) and all(map(_number, value.values()))
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def headline(details: dict, keys: Sequence[str] = HEADLINE) -> dict:
    """Only the numbers of `keys`, in that order; an undefined one (None, or an interval with an
    undefined bound) is left out, not written as null, so a metrics file holds numbers only."""
    return {k: details[k] for k in keys if _number(details.get(k))}
