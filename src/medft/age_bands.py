"""Age bands for subgroup analysis, one definition for every source (NIH's table, DICOM headers).

Ages above 100 are recording errors (the 2017 NIH table has 148 and 414), not patients: they
fall in no band, and the readers count them.
"""

from __future__ import annotations

from bisect import bisect_right

AGE_BANDS = ("0-17", "18-39", "40-59", "60-79", "80+")
BAND_STARTS = (0, 18, 40, 60, 80)
OLDEST_PLAUSIBLE_AGE = 100


def impossible_age(years: int | None) -> bool:
    """True for an age no patient has (below 0 or above 100); a missing age is not one."""
    return years is not None and not 0 <= years <= OLDEST_PLAUSIBLE_AGE


def age_band(years: int | None) -> str | None:
    """The band of an age in whole years ('0-17' ... '80+'); None when missing or impossible."""
    if years is None or impossible_age(years):
        return None
    return AGE_BANDS[bisect_right(BAND_STARTS, years) - 1]
