"""The evaluate stage's plot files: predictions for the confusion matrix, one ROC table of
every class with its AUC in the legend's name and the chance diagonal, which the ROC template
keeps apart from every class, a class named chance too, and the reliability diagram's bins with
the ECE in the legend's name and the diagonal of perfect calibration."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lungdx.arrays import scored_test_split
from lungdx.errors import LungdxError
from lungdx.evaluate import write_plots
from lungdx.stats import expected_calibration_error, reliability_table

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
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["predictions.csv", "reliability.csv", "roc.csv"]
    roc = pd.read_csv(tmp_path / "plots" / "roc.csv")
    assert list(roc.columns) == ["class", "curve", "fpr", "tpr", "threshold"]
    roc["class"] = roc["class"].fillna("")  # the diagonal's class is empty
    assert list(roc["class"].unique()) == CLASSES + [""]
    for i, c in enumerate(CLASSES):
        curve = roc[roc["class"] == c]
        (name,) = curve["curve"].unique()
        auc = float(re.fullmatch(rf"{re.escape(c)} \(AUC ([0-9.]+)\)", name)[1])
        assert auc == round(roc_auc_score(y_true == i, probs[:, i]), 3), name
        assert 0.5 < auc < 1, "a learnt but imperfect classifier: a non-trivial check"
        assert curve[["fpr", "tpr"]].iloc[[0, -1]].values.tolist() == [[0, 0], [1, 1]]
        assert curve["fpr"].is_monotonic_increasing and curve["tpr"].is_monotonic_increasing
    chance = roc[roc["class"] == ""]
    assert chance[["fpr", "tpr"]].values.tolist() == [[0, 0], [1, 1]]
    assert chance["curve"].tolist() == ["chance (AUC 0.500)"] * 2


def test_a_class_absent_from_the_test_split_has_no_roc_curve(tmp_path):
    y_true, probs = known_predictions()
    keep = y_true != 2
    write_plots(tmp_path / "plots", y_true[keep], probs[keep], CLASSES, ["x.png"] * int(keep.sum()))
    roc = pd.read_csv(tmp_path / "plots" / "roc.csv", keep_default_na=False)
    assert list(roc["class"].unique()) == ["COVID", "Lung_Opacity", "Viral Pneumonia", ""]


def test_the_pipeline_writes_every_class_curve(tiny_run):
    roc = pd.read_csv(tiny_run / "plots" / "roc.csv", keep_default_na=False)
    predictions = pd.read_csv(tiny_run / "plots" / "predictions.csv")
    assert set(roc["class"]) == set(CLASSES) | {""}
    for c in CLASSES:
        auc = roc_auc_score(predictions["actual"] == c, predictions[f"p_{c}"])
        assert roc.loc[roc["class"] == c, "curve"].iloc[0] == f"{c} (AUC {auc:.3f})"


def template_layers(template="roc", field="class"):
    """A template's layers, each as (its filter as a test on a row, its encoding); the filters are
    compared the way Vega does, `datum['<field>'] === '...'` or `!==`."""
    template = json.loads((Path(__file__).parents[1] / ".dvc" / "plots" / f"{template}.json").read_text())
    layers = []
    for layer in template["spec"]["layer"]:
        (step,) = [step for step in layer["transform"] if "filter" in step]
        op, value = re.fullmatch(rf"datum\['{field}'\] (===|!==) '([^'\\]*)'", step["filter"]).groups()
        layers.append((lambda row, op=op, value=value: (row[field] == value) == (op == "==="), layer["encoding"]))
    return layers


def test_a_class_named_chance_gets_its_own_curve_beside_the_one_diagonal(tmp_path):
    classes = ["chance", "COVID", "Normal", "Viral Pneumonia"]
    y_true, probs = known_predictions()
    write_plots(tmp_path / "plots", y_true, probs, classes, ["x.png"] * len(y_true))
    with open(tmp_path / "plots" / "roc.csv", newline="") as f:
        rows = list(csv.DictReader(f))  # as dvc reads it: every cell a string
    (diagonal, dashed), (curves, coloured) = template_layers()
    assert [(r["curve"], r["fpr"], r["tpr"]) for r in rows if diagonal(r)] == [
        ("chance (AUC 0.500)", "0.0", "0.0"),
        ("chance (AUC 0.500)", "1.0", "1.0"),
    ]
    assert 0.5 < roc_auc_score(y_true == 0, probs[:, 0]) < 1  # the class chance: not the diagonal's 0.500
    drawn = {r["curve"] for r in rows if curves(r)}
    assert drawn == {f"{c} (AUC {roc_auc_score(y_true == i, probs[:, i]):.3f})" for i, c in enumerate(classes)}
    assert all(curves(r) != diagonal(r) for r in rows)  # each row in one layer
    assert dashed["strokeDash"]["field"] == coloured["color"]["field"] == "curve"  # one line per curve name


def test_the_reliability_table_holds_each_bin_the_ece_in_its_name_and_the_diagonal_apart(tmp_path):
    y_true, probs = known_predictions(n=400)
    write_plots(tmp_path / "plots", y_true, probs, CLASSES, ["x.png"] * len(y_true))
    with open(tmp_path / "plots" / "reliability.csv", newline="") as f:
        rows = list(csv.DictReader(f))  # as dvc reads it: every cell a string
    assert list(rows[0]) == ["curve", "bin", "confidence", "accuracy", "count"]
    (diagonal, dashed), (points, line), (_, sized) = template_layers("reliability", "bin")
    assert [(r["curve"], r["confidence"], r["accuracy"], r["count"]) for r in rows if diagonal(r)] == [
        ("perfect calibration", "0.0", "0.0", ""),
        ("perfect calibration", "1.0", "1.0", ""),
    ]
    drawn = [r for r in rows if points(r)]
    assert all(points(r) != diagonal(r) for r in rows)  # each row in one layer
    table = reliability_table(y_true, probs)
    assert {r["curve"] for r in drawn} == {f"model (ECE {expected_calibration_error(y_true, probs):.3f})"}
    assert [int(r["count"]) for r in drawn] == table["count"].tolist() and table["count"].sum() == 400
    np.testing.assert_allclose([float(r["confidence"]) for r in drawn], table["confidence"], atol=1e-6)
    np.testing.assert_allclose([float(r["accuracy"]) for r in drawn], table["accuracy"], atol=1e-6)
    assert len(drawn) > 3 and drawn[0]["bin"] == f"{table['bin'][0] / 15:.3f}-{(table['bin'][0] + 1) / 15:.3f}"
    assert dashed["strokeDash"]["field"] == line["color"]["field"] == "curve"
    assert sized["size"]["field"] == "images"  # the count as a number: dvc hands the template strings


@pytest.mark.parametrize(
    "count, size, top_label, focus, message",
    [
        (0, 32, 0, "none", "holds no images to score model.keras on; give the sample stage a larger test share"),
        (4, 64, 1, "none", "model.keras expects 32px images but .* holds 64px ones"),
        (4, 32, 3, "none", "model.keras knows 2 classes but .* holds 4; run dvc repro"),
        (4, 32, 1, "crop", "model.keras was trained on images with lung focus 'none' but .* holds images with 'crop'"),
    ],
)
def test_a_test_split_that_does_not_fit_the_model_is_one_line_naming_both(
    tmp_path, count, size, top_label, focus, message
):
    """evaluate and gradcam read the test split through scored_test_split."""
    folder = tmp_path / "prepared" / "test"
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", np.zeros((count, size, size), np.uint8))
    np.save(folder / "labels.npy", np.minimum(np.arange(count), top_label))
    (folder.parent / "meta.json").write_text(json.dumps({"lung_mask": focus}))
    info = {"image_size": 32, "classes": ["a", "b"], "input": {"lung_mask": "none"}}
    with pytest.raises(LungdxError, match=message):
        scored_test_split("model.keras", info, tmp_path / "prepared")
