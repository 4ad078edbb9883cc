import pytest

from medft.age_bands import AGE_BANDS, age_band, impossible_age


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "0-17"), (17, "0-17"), (18, "18-39"), (39, "18-39"), (40, "40-59"), (59, "40-59"),
        (60, "60-79"), (79, "60-79"), (80, "80+"), (100, "80+"), (101, None), (414, None),
        (None, None), (-1, None),
    ],
)  # fmt: skip
def test_age_bands_at_their_edges(age, band):
    assert age_band(age) == band


def test_only_ages_over_100_or_below_0_are_impossible():
    assert AGE_BANDS == ("0-17", "18-39", "40-59", "60-79", "80+")
    assert [impossible_age(a) for a in (None, 0, 100, 101, 148, -1)] == [
        False, False, False, True, True, True,
    ]  # fmt: skip
