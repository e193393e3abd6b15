"""One rule for every number a person reads: the Grad-CAM report, the lungdx command's text output
and the stages' closing lines. Scores and probabilities (accuracy, F1, AUC, Dice, shares,
calibration error, a class's probability) get three decimals, an interval the same decimals as its
score, and a p-value reads `p = 0.012` or `p < 0.001`. JSON files keep full precision; so does
`lungdx verify`, whose job is to show differences smaller than these decimals (`exact`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

DECIMALS = 3
# Under it, "p < 0.001": the bootstrap's 2,000 resamples cannot resolve less, and no reader
# decides differently at 0.0004 than at 0.0009.
P_FLOOR = 0.001
P_DECIMALS = 3


def score(value: float | None, *, signed: bool = False) -> str:
    """0.951 (or +0.051 with `signed`); 0.000 for what rounds to zero, never -0.000; "n/a" for a
    missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    rounded = round(value, DECIMALS) or 0.0  # -0.0 is falsy: no minus sign on a zero
    return f"{rounded:+.{DECIMALS}f}" if signed else f"{rounded:.{DECIMALS}f}"


def interval(lower: float | None, upper: float | None, *, signed: bool = False) -> str:
    """[0.730, 0.890]: the bounds with their score's decimals."""
    return f"[{score(lower, signed=signed)}, {score(upper, signed=signed)}]"


def has_interval(ci: Mapping[str, float | None] | None) -> bool:
    """Whether `ci` ({"lower", "upper"}, as the metrics files hold intervals) has both bounds."""
    if not ci:
        return False
    return ci.get("lower") is not None and ci.get("upper") is not None


def score_with_interval(value: float | None, ci: Mapping[str, float | None] | None, *, signed: bool = False) -> str:
    """0.810 [0.730, 0.890], or the score alone where there is no interval."""
    if not ci or not has_interval(ci):
        return score(value, signed=signed)
    return f"{score(value, signed=signed)} {interval(ci['lower'], ci['upper'], signed=signed)}"


def p_value(p: float | None) -> str:
    """p = 0.012, p = 1.000 or p < 0.001. Rounded down, so that the p shown and a verdict at a
    level (p < 0.05) never disagree: 0.0499 reads p = 0.049, not p = 0.050."""
    if p is None or not math.isfinite(p):
        return "p = n/a"
    if p < P_FLOOR:
        return f"p < {P_FLOOR:.{P_DECIMALS}f}"
    scale = 10**P_DECIMALS
    return f"p = {math.floor(round(p * scale, 6)) / scale:.{P_DECIMALS}f}"  # round(): 0.029 * 1000 is 28.999...


def exact(value: float, *, signed: bool = False) -> str:
    """A metric as its file holds it (6 significant digits), for comparing two runs: 0.93125, +9.4e-05."""
    return f"{value:+.6g}" if signed else f"{value:.6g}"
