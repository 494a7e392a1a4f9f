"""The collector settings of a serving process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from proctor import heap


@pytest.fixture
def restored() -> Iterator[None]:
    """Put the collector back as the test process had it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class TestSettle:
    def test_moves_what_survives_out_of_the_generations(self, restored: None) -> None:
        """After settling, an object built before it is frozen, not tracked anew."""
        survivor = [object()]
        heap.settle()

        assert gc.get_freeze_count() > 0
        assert not any(obj is survivor for obj in gc.get_objects())

    def test_collects_the_young_less_often(self, restored: None) -> None:
        """The young generation's threshold becomes the settled one."""
        heap.settle()

        assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD

    def test_garbage_from_before_is_collected_not_frozen(self, restored: None) -> None:
        """A cycle left unreachable before settling is freed, not kept for ever."""
        cycle: list[object] = []
        cycle.append(cycle)
        witness = _Witness()
        cycle.append(witness)
        collected = witness.collected
        del cycle, witness
        heap.settle()

        assert collected == [True]


class _Witness:
    """Records on a list that outlives it that it was finalised."""

    def __init__(self) -> None:
        self.collected: list[bool] = []

    def __del__(self) -> None:
        self.collected.append(True)
