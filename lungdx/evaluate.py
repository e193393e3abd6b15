"""Metrics and plots on the test split, shared by the models and the baseline.

    metrics/eval.json                 model, n_test, accuracy, f1_macro, f1_weighted, roc_auc_ovr,
                                      per_class {precision, recall, f1, support}, confusion_matrix
    metrics/plots/predictions.csv     one row per test image: path, actual, predicted, p_<class>...
                                      (dvc's confusion template reads actual/predicted)
    metrics/plots/roc/<class>.csv     one-vs-rest ROC curve per class: fpr, tpr, threshold
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .atomic import atomic_dir, write_json
from .datasets import load_split, predict
from .errors import LungdxError
from .sample import load_manifest


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], model: str) -> dict:
    """The one metrics dict of this project; every number rounded so JSON diffs stay readable."""
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

    def r6(x):
        return None if np.isnan(x) else round(float(x), 6)

    return {
        "model": model,
        "n_test": int(len(y_true)),
        "accuracy": r6(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": r6(skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "f1_weighted": r6(skm.f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0)),
        "roc_auc_ovr": r6(auc),
        "per_class": {c: {"precision": r6(p[i]), "recall": r6(r[i]), "f1": r6(f[i]), "support": int(s[i])}
                      for i, c in enumerate(classes)},
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def load_model(model_dir: str | Path = "models"):
    """The saved end-to-end model and its classes.json."""
    import keras

    model_dir = Path(model_dir)
    path, info_path = model_dir / "model.keras", model_dir / "classes.json"
    if not path.is_file() or not info_path.is_file():
        raise LungdxError(f"{path}: not found; train a model first (dvc repro train)")
    try:
        model = keras.models.load_model(path)
    except Exception as exc:
        raise LungdxError(f"{path}: could not be loaded ({type(exc).__name__}: {exc}); retrain it with "
                          "dvc repro -f train") from None
    return model, json.loads(info_path.read_text())


def predict_probs(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return predict(model, images, batch_size)


def predict_split(model, images: np.ndarray, features_dir, split: str) -> np.ndarray:
    """The model's probabilities on a prepared split; for a VGG19 whose frozen base computed the
    cached features, its head on those features: the same numbers, one pass of the base fewer."""
    import keras

    from .features import cached_features_for

    features = cached_features_for(model, features_dir, split)
    if features is None:
        return predict_probs(model, images)
    head = keras.Model(model.get_layer("gap").output, model.output)
    return predict(head, features)


def write_plots(out_dir: Path, y_true, probs, classes, paths) -> None:
    """predictions.csv for the confusion matrix, and one ROC curve per class."""
    with atomic_dir(out_dir) as tmp:
        table = pd.DataFrame({"path": paths, "actual": [classes[i] for i in y_true],
                              "predicted": [classes[i] for i in probs.argmax(1)]})
        for i, c in enumerate(classes):
            table[f"p_{c}"] = probs[:, i].round(6)
        table.to_csv(tmp / "predictions.csv", index=False, lineterminator="\n")
        (tmp / "roc").mkdir()
        for i, c in enumerate(classes):
            if (y_true == i).any() and (y_true != i).any():
                fpr, tpr, thr = skm.roc_curve(y_true == i, probs[:, i])
                pd.DataFrame({"fpr": fpr.round(6), "tpr": tpr.round(6), "threshold": np.clip(thr, 0, 1).round(6)}
                             ).to_csv(tmp / "roc" / f"{c}.csv", index=False, lineterminator="\n")


def evaluate(model_dir="models", prepared_dir="data/prepared", manifest="data/sampled/manifest.csv",
             metrics_path="metrics/eval.json", plots_dir="metrics/plots", features_dir="data/features") -> dict:
    model, info = load_model(model_dir)
    images, y_true = load_split(prepared_dir, "test")
    if images.shape[1] != info["image_size"]:
        raise LungdxError(f"the model expects {info['image_size']}px images but data/prepared holds "
                          f"{images.shape[1]}px ones; run dvc repro")
    probs = predict_split(model, images, features_dir, "test")
    result = classification_metrics(y_true, probs, info["classes"], info["architecture"])
    rows = load_manifest(manifest)
    write_plots(Path(plots_dir), y_true, probs, info["classes"], rows[rows["split"] == "test"]["path"].tolist())
    write_json(metrics_path, result)
    return result
