"""Cross-boundary plates: the core's shape, the Chinese marks, the plate above."""

from __future__ import annotations

import pytest

from edge import crossboundary as cb


@pytest.mark.parametrize(
    ("text", "shaped"),
    [("Z1234", True), ("ZA12B", True), ("Z123", False), ("AZ1234", False), ("Z12345", False)],
)
def test_the_core_shape(text, shaped):
    assert cb.has_core_shape(text) is shaped


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ("粤Z1234港", "粤Z1234港"),
        ("粤ZA123澳", "粤ZA123澳"),
        ("Z1234港", "Z1234港"),  # the province missed: left out, not guessed
        ("1粤Z1234港7", "粤Z1234港"),  # bolts either side
        ("粤Z1234", "粤Z1234"),
        ("Z1234", None),  # no mark: an ordinary plate of that shape
        ("粤Z1284港", None),  # another core than the plate's reading
    ],
)
def test_marked_text(read, expected):
    assert cb.marked_text("Z1234" if "ZA" not in read else "ZA123", read) == expected


def test_the_plate_above_is_the_nearest_stacked_one():
    below = (100.0, 200.0, 300.0, 250.0)
    hk = (110.0, 140.0, 290.0, 190.0)  # directly above, 10 px gap
    beside = (400.0, 140.0, 600.0, 190.0)  # another car
    far_above = (100.0, 20.0, 300.0, 70.0)  # 130 px up: more than 1.5 plate heights
    under = (100.0, 270.0, 300.0, 320.0)
    assert cb.stacked_above(below, [(0, beside), (1, hk), (2, far_above), (3, under)]) == 1
    assert cb.stacked_above(below, [(0, beside), (2, far_above), (3, under)]) is None
    # A detector box that takes in the top of the lower plate still counts as above.
    overlapping = (110.0, 150.0, 290.0, 205.0)
    assert cb.stacked_above(below, [(7, overlapping)]) == 7
