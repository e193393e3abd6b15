"""Numbers with their uncertainty: the bootstrap intervals cover the truth as often as they claim,
the vectorised statistics are sklearn's, the calibration error is the textbook one, and the paired
tests find a planted difference and (about 5% of the time, at most) a null one."""

from functools import partial

import numpy as np
import pytest
from sklearn import metrics as skm

from lungdx import stats
from lungdx.stats import (
    RESAMPLES,
    accuracy,
    binomial_two_sided,
    bootstrap_indices,
    bootstrap_interval,
    expected_calibration_error,
    f1_macro,
    mcnemar,
    paired_bootstrap,
    reliability_table,
    split_intervals,
    split_statistics,
)


def predictions(n, p_correct, k=4, seed=0):
    """Labels of n images and a classifier right on each with probability p_correct (else a wrong
    class, uniformly)."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    wrong = (y_true + rng.integers(1, k, n)) % k
    return y_true, np.where(rng.random(n) < p_correct, y_true, wrong)


def test_the_95_percent_interval_covers_the_true_accuracy_in_about_95_percent_of_test_sets():
    """200 test sets of 200 images from a population where the model is right 80% of the time."""
    covered, widths = [], []
    for sim in range(200):
        y_true, y_pred = predictions(200, 0.8, seed=1000 + sim)
        low, high = bootstrap_interval(accuracy, y_true, y_pred, seed=sim)
        covered.append(low <= 0.8 <= high)
        widths.append(high - low)
    assert 0.90 <= np.mean(covered) <= 0.99, np.mean(covered)
    # Not trivially wide: about 2 * 1.96 * sqrt(0.8 * 0.2 / 200) = 0.111, as the binomial says.
    assert 0.09 < np.mean(widths) < 0.13, np.mean(widths)


def test_vectorised_statistics_equal_sklearn_on_every_resample():
    # A rare class (3, two images) is missing from some resamples: then macro F1 is over the classes
    # present or predicted (a class with neither has no F1), as sklearn with those labels.
    y_true, y_pred = predictions(40, 0.7, k=3, seed=1)
    y_true, y_pred = np.r_[y_true, 3, 3], np.r_[y_pred, 3, 0]
    k, labels = 4, [0, 1, 2, 3]
    idx = bootstrap_indices(len(y_true), 50, seed=2)
    values = split_statistics(y_true[idx], y_pred[idx], k)
    assert values.shape == (50, 2 + 2 * k)
    missing = 0
    for row, i in zip(values, idx, strict=True):
        t, p = y_true[i], y_pred[i]
        cm = skm.confusion_matrix(t, p, labels=labels)
        assert row[0] == pytest.approx(skm.accuracy_score(t, p))
        seen = sorted(set(t) | set(p))
        assert row[1] == pytest.approx(skm.f1_score(t, p, average="macro", labels=seen, zero_division=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            sensitivity = np.diag(cm) / cm.sum(1)
            negatives = cm.sum() - cm.sum(1)
            specificity = (negatives - (cm.sum(0) - np.diag(cm))) / negatives
        np.testing.assert_allclose(row[2 : 2 + k], sensitivity)  # nan where a class is absent
        np.testing.assert_allclose(row[2 + k :], specificity)
        missing += not (t == 3).any()
    assert missing > 0, "no resample without the rare class: the zero-division case went untested"
    assert f1_macro(y_true[idx], y_pred[idx], k) == pytest.approx(values[:, 1])
    assert accuracy(y_true[idx], y_pred[idx]) == pytest.approx(values[:, 0])


def test_the_interval_is_the_percentiles_of_sklearn_on_the_same_resamples():
    y_true, y_pred = predictions(300, 0.75, seed=3)
    idx = bootstrap_indices(len(y_true), 400, seed=4)
    f1s = [skm.f1_score(y_true[i], y_pred[i], average="macro", labels=range(4), zero_division=0) for i in idx]
    low, high = bootstrap_interval(partial(f1_macro, k=4), y_true, y_pred, resamples=400, seed=4)
    assert (low, high) == pytest.approx(tuple(np.percentile(f1s, [2.5, 97.5])))


def test_same_seed_same_interval_and_blocks_of_resamples_do_not_change_the_draws(monkeypatch):
    y_true, y_pred = predictions(500, 0.8, seed=5)
    first = split_intervals(y_true, y_pred, 4, seed=7)
    assert bootstrap_interval(accuracy, y_true, y_pred, seed=7) == pytest.approx(first["accuracy"][1:])
    assert bootstrap_interval(accuracy, y_true, y_pred, seed=8) != bootstrap_interval(accuracy, y_true, y_pred, seed=7)
    whole = bootstrap_indices(500, seed=7)
    assert whole.shape == (RESAMPLES, 500) and whole.min() >= 0 and whole.max() < 500
    monkeypatch.setattr(stats, "CHUNK", 3 * 500 + 1)  # blocks of 3 resamples
    np.testing.assert_array_equal(bootstrap_indices(500, seed=7), whole)
    again = split_intervals(y_true, y_pred, 4, seed=7)
    assert again["accuracy"] == first["accuracy"] and again["f1_macro"] == first["f1_macro"]
    np.testing.assert_array_equal(np.array(again["sensitivity"]), np.array(first["sensitivity"]))


def test_split_intervals_hold_their_point_and_a_class_without_images_has_none():
    y_true, y_pred = predictions(400, 0.85, k=3, seed=9)
    result = split_intervals(y_true, y_pred, 4, seed=1)  # class 3 never occurs
    value, low, high = result["accuracy"]
    assert value == pytest.approx(np.mean(y_true == y_pred)) and low < value < high
    value, low, high = result["sensitivity"]
    assert np.all(low[:3] < value[:3]) and np.all(value[:3] < high[:3])
    assert np.isnan([value[3], low[3], high[3]]).all()
    value, low, high = result["specificity"]
    assert value[3] == low[3] == high[3] == 1.0  # never predicted: every negative is a true negative


def test_ece_of_a_tiny_example_by_hand():
    # Top-label confidences 0.4 (right), 0.9 (wrong), 0.85 (right), 0.7 (right); bins of 0.2, (lower, upper].
    probs = np.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.85, 0.1, 0.05], [0.7, 0.2, 0.1]])
    y_true = np.array([0, 1, 0, 0])
    table = reliability_table(y_true, probs, bins=5)
    assert table["bin"].tolist() == [1, 3, 4] and table["count"].tolist() == [1, 1, 2]
    assert table["confidence"] == pytest.approx([0.4, 0.7, 0.875])
    assert table["accuracy"] == pytest.approx([1.0, 1.0, 0.5])
    # 1/4 * |1 - 0.4| + 1/4 * |1 - 0.7| + 2/4 * |0.5 - 0.875|
    assert expected_calibration_error(y_true, probs, bins=5) == pytest.approx(0.15 + 0.075 + 0.1875)


def calibrated(n, seed, overconfident=False):
    """Two classes; the top label is right with probability equal to its confidence, drawn from
    U(0.5, 1); overconfident: the model states 0.99 whatever it knows."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1, n)
    y_true = (rng.random(n) >= confidence).astype(int)  # the top label, 0, is right w.p. confidence
    stated = np.full(n, 0.99) if overconfident else confidence
    return y_true, np.c_[stated, 1 - stated]


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    assert expected_calibration_error(*calibrated(200_000, seed=1)) < 0.01
    y_true, probs = calibrated(200_000, seed=1, overconfident=True)
    # Right 75% of the time on average, stated 0.99: a gap of about 0.24.
    assert expected_calibration_error(y_true, probs) == pytest.approx(0.24, abs=0.01)
    assert expected_calibration_error(*calibrated(1000, seed=2)) < expected_calibration_error(
        *calibrated(1000, seed=2, overconfident=True)
    )


def test_exact_mcnemar_by_hand():
    assert binomial_two_sided(0, 5) == pytest.approx(2 / 32) and binomial_two_sided(5, 5) == pytest.approx(2 / 32)
    assert binomial_two_sided(1, 6) == pytest.approx(2 * 7 / 64)
    assert binomial_two_sided(3, 6) == 1.0 and binomial_two_sided(0, 0) == 1.0
    a = np.array([1, 1, 1, 1, 1, 0, 0, 1], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 1, 1], bool)
    assert mcnemar(a, b) == {"b01": 1, "b10": 5, "p_value": pytest.approx(2 * 7 / 64)}
    assert binomial_two_sided(5000, 20000) < 1e-300  # no underflow to an error at large n


def correctness(n, p_a, p_b, seed):
    rng = np.random.default_rng(seed)
    return rng.random(n) < p_a, rng.random(n) < p_b


def test_mcnemar_finds_a_planted_difference_and_not_a_null_one():
    a, b = correctness(500, 0.75, 0.85, seed=1)
    result = mcnemar(a, b)
    assert result["b01"] > result["b10"] and result["p_value"] < 0.01, result
    assert mcnemar(*correctness(500, 0.8, 0.8, seed=1))["p_value"] > 0.05


def test_mcnemar_rejects_a_true_null_in_about_5_percent_of_comparisons():
    rejected = [mcnemar(*correctness(200, 0.8, 0.8, seed=s))["p_value"] < 0.05 for s in range(1000)]
    # The exact test is conservative (at most 5%), yet not blind.
    assert 0.015 <= np.mean(rejected) <= 0.065, np.mean(rejected)


def test_paired_bootstrap_excludes_zero_for_a_planted_difference_and_includes_it_for_none():
    y_true, pred_a = predictions(600, 0.75, seed=11)
    better = np.random.default_rng(12).random(600) < 0.5
    pred_b = np.where(better, y_true, pred_a)  # B fixes about half of A's mistakes
    result = paired_bootstrap(y_true, pred_a, pred_b, accuracy, seed=3)
    assert result["difference"] == pytest.approx(np.mean(pred_b == y_true) - np.mean(pred_a == y_true))
    assert 0 < result["lower"] < result["difference"] < result["upper"] and result["p_value"] < 0.01, result
    assert paired_bootstrap(y_true, pred_a, pred_b, accuracy, seed=3) == result  # same seed, same answer
    # Against itself, B - A is 0 on every resample; and two equally good models.
    same = paired_bootstrap(y_true, pred_a, pred_a, accuracy, seed=3)
    assert (same["difference"], same["lower"], same["upper"], same["p_value"]) == (0, 0, 0, 1)
    pred_c = np.where(np.random.default_rng(14).random(600) < 0.75, y_true, (y_true + 1) % 4)
    null = paired_bootstrap(y_true, pred_a, pred_c, partial(f1_macro, k=4), seed=3)
    assert null["lower"] < 0 < null["upper"] and null["p_value"] > 0.05, null


def test_the_interval_of_a_mean_covers_the_population_mean_and_ignores_nan():
    from lungdx.stats import mean_interval

    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(200):
        values = rng.beta(2, 5, 150)  # a lung-share-like spread, mean 2/7
        low, high = mean_interval(values, resamples=500, seed=1)
        covered += low <= 2 / 7 <= high
    assert 0.9 <= covered / 200 <= 0.99
    with_nan = np.array([0.2, np.nan, 0.4, 0.6])
    low, high = mean_interval(with_nan, seed=0)
    assert 0.2 <= low <= 0.4 <= high <= 0.6


def test_macro_f1_over_some_classes_matches_sklearn():
    """An external dataset with only some of the model's classes: F1 over those, predictions of
    the others counted wrong."""
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.choice([0, 2], 200), rng.integers(0, 4, 200)
    assert f1_macro(y_true, y_pred, 4, labels=[0, 2]) == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=[0, 2], average="macro", zero_division=0)
    )


def test_a_rare_class_always_right_does_not_pull_the_f1_interval_down():
    y = np.r_[np.zeros(49, int), np.ones(49, int), 2, 2]  # perfect predictions, class 2 twice
    assert split_intervals(y, y, 3, seed=0)["f1_macro"] == (1.0, 1.0, 1.0)
