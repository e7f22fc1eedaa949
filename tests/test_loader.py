"""EpochSampler: every epoch visits each item once, continues the index, and is seeded."""

from volseg.data.loader import EpochSampler


def test_epochs_continue_and_are_seeded():
    a, b = EpochSampler(5, seed=3), EpochSampler(5, seed=3)
    first, second = list(a), list(a)
    assert sorted(first) == [0, 1, 2, 3, 4] and sorted(second) == [5, 6, 7, 8, 9]
    assert list(b) == first and len(a) == 5
    assert list(EpochSampler(4, shuffle=False)) == [0, 1, 2, 3]
