"""exp, log, power, sin and cos that give the same bits on every CPU.

NumPy picks its exp, log, power and trigonometric loops at run time by the processor's
vector instructions (AVX-512, AVX2, SSE), and each variant rounds differently in the last
bit; the C library's scalar functions differ between versions and FMA variants too. So the
synthetic X-rays of one seed came out a few pixels different on another CPU, and every hash
downstream with them. These functions use only what IEEE 754 rounds exactly whatever the
hardware (float64 +, -, *, /, rint, frexp, ldexp): NumPy runs each as its own loop, so no
multiply and add are ever fused into one FMA (which rounds once instead of twice), and every
SIMD width gives the same bits. They are accurate to a few units in the last place (tested
against NumPy's), which is all an image generator needs: what matters is that they are the
same everywhere. The pinned NumPy's, that is: another release could change how a loop rounds
only by breaking IEEE 754.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

LN2 = 0.6931471805599453
# ln 2 in two parts (Cody and Waite): k * LN2_HI is exact for |k| < 2048, so x - k ln 2 loses nothing.
LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
SQRT_HALF = 0.7071067811865476
PI = 3.141592653589793
# Taylor coefficients 1/k!, highest first, for Horner's rule: on |r| <= ln(2)/2 the term
# after the last is below 1e-17 of the result.
# Python's int division rounds correctly, so these are the same constants everywhere.
_EXP = tuple(1 / math.factorial(k) for k in range(14, -1, -1))
# sin's odd Taylor coefficients (-1)^n / (2n+1)!, highest first, for |r| <= pi/2.
_SIN = tuple((-1) ** n / math.factorial(2 * n + 1) for n in range(11, -1, -1))


def _horner(coefficients, x):
    p = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        p = np.add(np.multiply(p, x), c)
    return p


def exp(x: npt.ArrayLike) -> np.ndarray:
    """e**x, float64, for any float input (below -745 it is 0, above 709 inf)."""
    x = np.clip(np.asarray(x, np.float64), -746.0, 710.0)
    k = np.rint(np.divide(x, LN2))
    r = np.subtract(np.subtract(x, np.multiply(k, LN2_HI)), np.multiply(k, LN2_LO))
    with np.errstate(over="ignore"):  # above 709: inf, as np.exp gives
        return np.ldexp(_horner(_EXP, r), k.astype(np.int32))


def log(x: npt.ArrayLike) -> np.ndarray:
    """Natural logarithm, float64, for x > 0 (x <= 0 gives nan; callers keep x positive)."""
    x = np.asarray(x, np.float64)
    m, e = np.frexp(np.where(x > 0, x, np.nan))  # x = m * 2**e, m in [0.5, 1)
    low = m < SQRT_HALF
    m = np.where(low, np.multiply(m, 2.0), m)  # m in [0.71, 1.41): s below stays small
    e = np.subtract(e, low.astype(e.dtype)).astype(np.float64)
    s = np.divide(np.subtract(m, 1.0), np.add(m, 1.0))  # log(m) = 2 atanh(s), |s| <= 0.172
    s2 = np.multiply(s, s)
    series = _horner(tuple(1.0 / k for k in range(23, 0, -2)), s2)  # 1 + s2/3 + s2**2/5 + ...
    return np.add(np.multiply(e, LN2), np.multiply(np.multiply(s, series), 2.0))


def power(x: npt.ArrayLike, y: npt.ArrayLike) -> np.ndarray:
    """x**y for x >= 0 (0**y = 0 for y > 0), float64."""
    x = np.asarray(x, np.float64)
    positive = x > 0
    out = exp(np.multiply(log(np.where(positive, x, 1.0)), y))
    return np.where(positive, out, 0.0)


def sin(x: npt.ArrayLike) -> np.ndarray:
    """Sine, float64: within 1e-15 over a turn either way, 1e-13 over 16 (the reduction by one
    2 pi constant loses accuracy as |x| grows; angles here stay within a turn)."""
    x = np.asarray(x, np.float64)
    r = np.subtract(x, np.multiply(np.rint(np.divide(x, 2 * PI)), 2 * PI))  # r in [-pi, pi]
    r = np.where(r > PI / 2, np.subtract(PI, r), np.where(r < -PI / 2, np.subtract(-PI, r), r))
    return np.multiply(r, _horner(_SIN, np.multiply(r, r)))


def cos(x: npt.ArrayLike) -> np.ndarray:
    """Cosine, float64: sin(x + pi/2)."""
    return sin(np.add(np.asarray(x, np.float64), PI / 2))
