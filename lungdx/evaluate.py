"""The `evaluate` stage: the trained model on the test split.

metrics/eval.json                 headline numbers only: accuracy, f1_macro, roc_auc_ovr, then
                                  accuracy_ci and f1_macro_ci {lower, upper} (95% percentile
                                  bootstrap over test images, seeded by params' seed) and ece
                                  (what dvc exp show / dvc metrics diff compare; lungdx.metrics)
reports/eval.json                 the details: the headline numbers, f1_weighted, n_test,
                                  per_class {precision, recall, f1, support, sensitivity,
                                  sensitivity_ci, specificity, specificity_ci}, confusion_matrix,
                                  intervals {method, over, resamples, seed, level},
                                  calibration {ece_bins, binning, confidence}, model
metrics/plots/predictions.csv     one row per test image: path, actual, predicted, p_<class>...
                                  (dvc's confusion template reads actual/predicted)
metrics/plots/roc.csv             every class's one-vs-rest ROC curve in one table: class, curve,
                                  fpr, tpr, threshold; curve is the legend's name, with the AUC
                                  ("COVID (AUC 0.981)"); the chance diagonal, "chance (AUC 0.500)",
                                  has an empty class: no class name is empty, so a class
                                  named chance keeps its own curve.
                                  dvc.yaml draws it with .dvc/plots/roc.json
metrics/plots/reliability.csv     the reliability diagram: curve, bin, confidence, accuracy, count;
                                  one row per non-empty bin of top-label confidence, curve
                                  "model (ECE 0.031)", then the diagonal, "perfect calibration",
                                  whose bin is empty. dvc.yaml draws it with .dvc/plots/reliability.json
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .arrays import predict, scored_test_split
from .atomic import atomic_dir, write_json
from .compare import predictions_table
from .metrics import classification_metrics, headline
from .model_file import load_model
from .readable import score
from .splits import test_paths
from .stats import ECE_BINS, expected_calibration_error, reliability_table

if TYPE_CHECKING:
    import keras

    from .params import EvaluateSettings


def predict_split(
    model: keras.Model,
    images: np.ndarray,
    features_dir: str | Path,
    split: str,
    model_path: str | Path | None = None,
    tta: bool = False,
) -> np.ndarray:
    """The model's probabilities on a prepared split (`tta`: see arrays.predict); for a VGG19 whose
    frozen base computed the cached features, its head on those features: the same numbers, one
    pass of the base fewer.
    Outputs that are not finite are a LungdxError naming model_path (see arrays.predict)."""
    import keras

    from .feature_cache import cached_features_for

    features = cached_features_for(model, features_dir, split)
    if features is None:
        return predict(model, images, source=model_path, desc=f"predict {split}", tta=tta)
    head = keras.Model(model.get_layer("gap").output, model.output)
    return predict(head, features, source=model_path, desc=f"predict {split}")


def roc_table(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Every class's one-vs-rest ROC curve (a class absent from, or alone in, the split has none),
    then the chance diagonal, whose class is empty; `curve` names each in the legend with its AUC."""
    parts = []
    for i, c in enumerate(classes):
        if (y_true == i).any() and (y_true != i).any():
            fpr, tpr, thr = skm.roc_curve(y_true == i, probs[:, i])
            parts.append(
                pd.DataFrame(
                    {
                        "class": c,
                        "curve": f"{c} (AUC {score(skm.auc(fpr, tpr))})",
                        "fpr": fpr.round(6),
                        "tpr": tpr.round(6),
                        "threshold": np.clip(thr, 0, 1).round(6),
                    }
                )
            )  # roc_curve starts at inf
    parts.append(
        pd.DataFrame(
            {"class": "", "curve": "chance (AUC 0.500)", "fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "threshold": np.nan}
        )
    )
    return pd.concat(parts, ignore_index=True)


def reliability_plot_table(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """The reliability diagram's points (non-empty bins of top-label confidence), named with the
    ECE for the legend, then the diagonal of perfect calibration, whose bin is empty."""
    table = reliability_table(y_true, probs, bins)
    edges = np.linspace(0, 1, bins + 1)
    points = pd.DataFrame(
        {
            "curve": f"model (ECE {score(expected_calibration_error(y_true, probs, bins))})",
            "bin": [f"{edges[b]:.3f}-{edges[b + 1]:.3f}" for b in table["bin"]],
            "confidence": table["confidence"].round(6),
            "accuracy": table["accuracy"].round(6),
            "count": table["count"],
        }
    )
    diagonal = pd.DataFrame(
        {"curve": "perfect calibration", "bin": "", "confidence": [0.0, 1.0], "accuracy": [0.0, 1.0], "count": pd.NA}
    )
    return pd.concat([points, diagonal], ignore_index=True)


def write_plots(out_dir: Path, y_true: np.ndarray, probs: np.ndarray, classes: list[str], paths: list[str]) -> None:
    """predictions.csv for the confusion matrix, roc.csv: the ROC curves of all classes, and
    reliability.csv: the reliability diagram."""
    with atomic_dir(out_dir) as tmp:
        table = predictions_table(paths, y_true, probs, classes)
        table.to_csv(tmp / "predictions.csv", index=False, lineterminator="\n")
        roc_table(y_true, probs, classes).to_csv(tmp / "roc.csv", index=False, lineterminator="\n")
        reliability_plot_table(y_true, probs).to_csv(tmp / "reliability.csv", index=False, lineterminator="\n")


def evaluate(
    settings: EvaluateSettings,
    model_path: str | Path,
    prepared_dir: str | Path,
    manifest: str | Path,
    metrics_path: str | Path,
    details_path: str | Path,
    plots_dir: str | Path,
    features_dir: str | Path,
) -> dict:
    """The evaluate stage; returns the details (headline numbers first). The seed of `settings`
    draws the bootstrap resamples of the intervals."""
    model, info = load_model(model_path)
    images, y_true = scored_test_split(model_path, info, prepared_dir)
    probs = predict_split(model, images, features_dir, "test", model_path, tta=info["tta"])
    details = {
        **classification_metrics(y_true, probs, info["classes"], seed=settings.seed),
        "model": info["architecture"],
    }
    write_plots(Path(plots_dir), y_true, probs, info["classes"], test_paths(manifest))
    write_json(details_path, details)
    write_json(metrics_path, headline(details))
    return details
