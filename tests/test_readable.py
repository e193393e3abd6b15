"""lungdx.readable: the one rule for numbers people read (three decimals, intervals alike, p-values
as `p = 0.012` or `p < 0.001`)."""

import math

import numpy as np
import pytest

from lungdx.readable import exact, interval, p_value, score, score_with_interval


def test_a_score_has_three_decimals_and_a_sign_when_asked():
    assert score(0.9506) == "0.951"
    assert score(1) == "1.000" and score(0) == "0.000"
    assert score(np.float32(0.25)) == "0.250"  # numpy scalars as floats
    assert score(0.0512, signed=True) == "+0.051" and score(-0.0304, signed=True) == "-0.030"


@pytest.mark.parametrize("missing", [None, math.nan, np.nan, math.inf, -math.inf])
def test_a_missing_or_undefined_score_reads_n_a(missing):
    assert score(missing) == "n/a" and score(missing, signed=True) == "n/a"


def test_an_interval_has_its_scores_decimals():
    assert interval(0.7301, 0.8904) == "[0.730, 0.890]"
    assert interval(-0.1304, 0.06, signed=True) == "[-0.130, +0.060]"
    assert interval(None, 0.5) == "[n/a, 0.500]"
    assert score_with_interval(0.8104, {"lower": 0.73, "upper": 0.89}) == "0.810 [0.730, 0.890]"
    assert score_with_interval(0.012, {"lower": -0.005, "upper": 0.03}, signed=True) == "+0.012 [-0.005, +0.030]"


@pytest.mark.parametrize("ci", [None, {}, {"lower": None, "upper": 0.9}, {"lower": 0.7, "upper": None}])
def test_a_score_without_its_interval_stands_alone(ci):
    assert score_with_interval(0.8104, ci) == "0.810"


@pytest.mark.parametrize(
    "p, text",
    [
        (0.0123, "p = 0.012"),
        (0.0004, "p < 0.001"),
        (0.0, "p < 0.001"),
        (0.001, "p = 0.001"),  # the smallest p written out
        (1.0, "p = 1.000"),
        (0.5, "p = 0.500"),
        (None, "p = n/a"),
        (math.nan, "p = n/a"),
    ],
)
def test_a_p_value_reads_p_equals_or_p_below_the_smallest_written(p, text):
    assert p_value(p) == text


def test_what_rounds_to_zero_carries_no_minus_sign():
    assert score(-0.0004) == "0.000" and score(-0.0004, signed=True) == "+0.000"
    assert score(-0.0006, signed=True) == "-0.001"
    assert interval(-0.0001, 0.0001, signed=True) == "[+0.000, +0.000]"


@pytest.mark.parametrize(
    "p, text", [(0.0499, "p = 0.049"), (0.0504, "p = 0.050"), (0.029, "p = 0.029"), (0.0009996, "p < 0.001")]
)
def test_a_p_value_is_rounded_down_so_it_never_contradicts_a_verdict_at_five_percent(p, text):
    assert p_value(p) == text
    assert (float(text.split()[-1]) < 0.05) == (p < 0.05) or text.startswith("p <")


def test_exact_keeps_what_a_metrics_file_holds_for_comparing_runs():
    assert exact(0.93125) == "0.93125" and exact(0.034807) == "0.034807"
    assert exact(0.034901 - 0.034807, signed=True) == "+9.4e-05"
