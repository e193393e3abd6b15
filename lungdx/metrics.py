"""Classification metrics, shared by the model's evaluation and the baseline.

Two views of one computation:
- `classification_metrics` -- everything a reader of a report wants: per-class
  precision/recall/F1, the confusion matrix, test-set size;
- `headline` -- the few numbers people compare across experiments, the only content
  of the files dvc.yaml declares as metrics (`dvc exp show`, `dvc metrics diff`, VS Code),
  with the same keys for the model and the baseline so columns line up.

And `wilson_interval`, the confidence interval the Grad-CAM report gives its accuracy.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

HEADLINE = ("accuracy", "f1_macro", "roc_auc_ovr")


def r6(x) -> float | None:
    """Rounded so JSON diffs stay readable; None for an undefined value (nan)."""
    return None if x is None or np.isnan(x) else round(float(x), 6)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Headline numbers first (HEADLINE), then f1_weighted, n_test, per_class and the confusion matrix."""
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    try:
        if len(classes) == 2:
            auc = skm.roc_auc_score(y_true, probs[:, 1])
        else:
            auc = skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels)
    except ValueError:  # a class absent from the test split has no ROC curve
        auc = float("nan")
    return {
        "accuracy": r6(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": r6(skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "roc_auc_ovr": r6(auc),
        "f1_weighted": r6(skm.f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0)),
        "n_test": int(len(y_true)),
        "per_class": {c: {"precision": r6(p[i]), "recall": r6(r[i]), "f1": r6(f[i]), "support": int(s[i])}
                      for i, c in enumerate(classes)},
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def headline(details: dict, keys=HEADLINE) -> dict:
    """Only the numbers of `keys`, in that order; an undefined one (None) is left out, not written
    as null, so a metrics file holds numbers only."""
    return {k: details[k] for k in keys if isinstance(details.get(k), (int, float))}


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes/n, 95% by default. Unlike the normal
    approximation it stays within [0, 1] and keeps a width at 0 or n successes (an accuracy of 1.0
    on 40 images is not certain). (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)
