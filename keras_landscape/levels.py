"""Comparing levels (level-function values) up to float32 ties.

A base module: numpy only, so that science (N_u counts) and report (census rows) compare
levels by one rule.
"""

from __future__ import annotations

import math

import numpy as np

# Levels within this relative distance of u (relative to the larger of |u| and the largest
# minimum level) count as u: minima that are equal in exact arithmetic come out of float32
# evaluation a few units in the last place apart, and whether one of them is "below u" must
# not decide N_u.
TIE_RTOL = 1e-5


def at_or_below(value, u: float, scale: float = 0.0):
    """value <= u up to float ties: TIE_RTOL relative to max(|u|, scale), where `scale` is
    the size of the levels compared (so that minima at and a hair above zero tie too)."""
    if not math.isfinite(u):
        return np.asarray(value, np.float64) <= u
    return np.asarray(value, np.float64) <= u + TIE_RTOL * max(abs(u), scale)
