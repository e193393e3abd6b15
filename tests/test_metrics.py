"""The shared metrics of the model and the baseline: headline numbers with their intervals and the
ECE, in one order and numbers only; the details say how the intervals were drawn."""

import numpy as np

from lungdx.metrics import HEADLINE, classification_metrics, headline
from lungdx.stats import expected_calibration_error

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def known_probs(n=200, seed=0, absent=None):
    rng = np.random.default_rng(seed)
    y_true = np.arange(n) % len(CLASSES)
    if absent is not None:
        y_true[y_true == absent] = (absent + 1) % len(CLASSES)
    logits = rng.normal(size=(n, len(CLASSES))) + 1.5 * np.eye(len(CLASSES))[y_true]
    return y_true, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_headline_is_the_numbers_then_their_intervals_then_the_ece():
    y_true, probs = known_probs()
    details = classification_metrics(y_true, probs, CLASSES, seed=239)
    top = headline(details)
    assert list(top) == list(HEADLINE) == ["accuracy", "f1_macro", "roc_auc_ovr", "accuracy_ci", "f1_macro_ci", "ece"]
    for key in ("accuracy", "f1_macro"):
        assert list(top[f"{key}_ci"]) == ["lower", "upper"]
        assert top[f"{key}_ci"]["lower"] < top[key] < top[f"{key}_ci"]["upper"]
        assert top[f"{key}_ci"]["upper"] - top[f"{key}_ci"]["lower"] < 0.2  # 200 images: about +-0.07
    assert top["ece"] == round(expected_calibration_error(y_true, probs), 6)
    assert details["intervals"] == {
        "method": "percentile bootstrap",
        "over": "test images",
        "resamples": 2000,
        "seed": 239,
        "level": 0.95,
    }
    assert details["calibration"]["ece_bins"] == 15
    for c, scores in details["per_class"].items():
        assert scores["sensitivity"] == scores["recall"]
        for key in ("sensitivity", "specificity"):
            assert scores[f"{key}_ci"]["lower"] <= scores[key] <= scores[f"{key}_ci"]["upper"], (c, scores)
    assert classification_metrics(y_true, probs, CLASSES, seed=239) == details
    assert classification_metrics(y_true, probs, CLASSES, seed=240)["accuracy_ci"] != details["accuracy_ci"]


def test_a_class_missing_from_the_test_split_has_no_sensitivity_and_the_headline_stays_numbers():
    y_true, probs = known_probs(absent=2)
    details = classification_metrics(y_true, probs, CLASSES, seed=1)
    normal = details["per_class"]["Normal"]
    assert normal["sensitivity"] is None and normal["sensitivity_ci"] == {"lower": None, "upper": None}
    assert 0 < normal["specificity_ci"]["lower"] <= normal["specificity"] <= normal["specificity_ci"]["upper"]
    assert details["roc_auc_ovr"] is None
    assert list(headline(details)) == ["accuracy", "f1_macro", "accuracy_ci", "f1_macro_ci", "ece"]


def test_an_interval_with_an_undefined_bound_is_left_out_of_the_headline():
    details = {
        "accuracy": 0.5,
        "f1_macro": 0.4,
        "roc_auc_ovr": None,
        "accuracy_ci": {"lower": None, "upper": 0.6},
        "f1_macro_ci": {"lower": 0.3, "upper": 0.5},
        "ece": 0.1,
    }
    assert headline(details) == {
        "accuracy": 0.5,
        "f1_macro": 0.4,
        "f1_macro_ci": {"lower": 0.3, "upper": 0.5},
        "ece": 0.1,
    }
