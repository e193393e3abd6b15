"""The evaluate stage's plot files: predictions for the confusion matrix, and one ROC table of
every class with its AUC in the legend's name and the chance diagonal."""

import re

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from lungdx.evaluate import write_plots

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def known_predictions(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y_true = np.arange(n) % len(CLASSES)
    logits = rng.normal(size=(n, len(CLASSES))) + 1.5 * np.eye(len(CLASSES))[y_true]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y_true, probs


def test_one_roc_table_names_each_curve_with_its_auc_and_holds_the_chance_line(tmp_path):
    y_true, probs = known_predictions()
    write_plots(tmp_path / "plots", y_true, probs, CLASSES, [f"x{i}.png" for i in range(len(y_true))])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["predictions.csv", "roc.csv"]
    roc = pd.read_csv(tmp_path / "plots" / "roc.csv")
    assert list(roc.columns) == ["class", "curve", "fpr", "tpr", "threshold"]
    assert list(roc["class"].unique()) == CLASSES + ["chance"]
    for i, c in enumerate(CLASSES):
        curve = roc[roc["class"] == c]
        (name,) = curve["curve"].unique()
        auc = float(re.fullmatch(rf"{re.escape(c)} \(AUC ([0-9.]+)\)", name)[1])
        assert auc == round(roc_auc_score(y_true == i, probs[:, i]), 3), name
        assert 0.5 < auc < 1, "a learnt but imperfect classifier: a non-trivial check"
        assert curve[["fpr", "tpr"]].iloc[[0, -1]].values.tolist() == [[0, 0], [1, 1]]
        assert curve["fpr"].is_monotonic_increasing and curve["tpr"].is_monotonic_increasing
    chance = roc[roc["class"] == "chance"]
    assert chance[["fpr", "tpr"]].values.tolist() == [[0, 0], [1, 1]]
    assert chance["curve"].tolist() == ["chance (AUC 0.500)"] * 2


def test_a_class_absent_from_the_test_split_has_no_roc_curve(tmp_path):
    y_true, probs = known_predictions()
    keep = y_true != 2
    write_plots(tmp_path / "plots", y_true[keep], probs[keep], CLASSES, ["x.png"] * int(keep.sum()))
    roc = pd.read_csv(tmp_path / "plots" / "roc.csv")
    assert list(roc["class"].unique()) == ["COVID", "Lung_Opacity", "Viral Pneumonia", "chance"]


def test_the_pipeline_writes_every_class_curve(tiny_run):
    roc = pd.read_csv(tiny_run / "plots" / "roc.csv")
    predictions = pd.read_csv(tiny_run / "plots" / "predictions.csv")
    assert set(roc["class"]) == set(CLASSES) | {"chance"}
    for c in CLASSES:
        auc = roc_auc_score(predictions["actual"] == c, predictions[f"p_{c}"])
        assert roc.loc[roc["class"] == c, "curve"].iloc[0] == f"{c} (AUC {auc:.3f})"
