"""One rule for every number a person reads: the Grad-CAM report, the lungdx command's text
output and tables written into docs. Scores (accuracy, F1, AUC, Dice, shares, calibration error)
get three decimals, an interval the same decimals as its score, and a p-value reads `p = 0.012`
or `p < 0.001`. JSON files keep full precision; this is for eyes only.
"""

from __future__ import annotations

import math

DECIMALS = 3
SMALLEST_P = 10**-DECIMALS  # under it, "p < 0.001": more decimals would claim a precision the test lacks


def score(value: float | None, *, signed: bool = False) -> str:
    """0.951 (or +0.051 with `signed`); "n/a" for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{DECIMALS}f}" if signed else f"{value:.{DECIMALS}f}"


def interval(lower: float | None, upper: float | None, *, signed: bool = False) -> str:
    """[0.730, 0.890]: the bounds with their score's decimals."""
    return f"[{score(lower, signed=signed)}, {score(upper, signed=signed)}]"


def score_with_interval(value: float | None, ci: dict | None, *, signed: bool = False) -> str:
    """0.810 [0.730, 0.890], or the score alone where there is no interval ({"lower", "upper"})."""
    if not ci or ci.get("lower") is None or ci.get("upper") is None:
        return score(value, signed=signed)
    return f"{score(value, signed=signed)} {interval(ci['lower'], ci['upper'], signed=signed)}"


def p_value(p: float | None) -> str:
    """p = 0.012, p = 1.000 or p < 0.001."""
    if p is None or not math.isfinite(p):
        return "p = n/a"
    return f"p < {SMALLEST_P:.{DECIMALS}f}" if p < SMALLEST_P else f"p = {p:.{DECIMALS}f}"
