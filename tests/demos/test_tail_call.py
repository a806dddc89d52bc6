"""kpemu demo tail-call: F jumps to G, both kretprobed, design (b)."""

import pytest

from tests.demos.conftest import recorded


@pytest.fixture(scope="module")
def lesson():
    return recorded("tail-call")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []


def test_one_return_two_handlers_innermost_first(lesson):
    f = lesson.facts
    handlers = [s["facts"] for s in lesson.select(phase="R.handler")]
    assert [(h["function"], h["ret_addr"]) for h in handlers] == [
        ("designs_g", f["tramp"]), ("designs_f", f["resume"])]
    assert [s["facts"]["function"] for s in lesson.select(phase="R.recycle")] == [
        "designs_g", "designs_f"]
    assert f["value"] == f["unprobed"] == 22


def test_g_reuses_the_slot_f_swapped(lesson):
    swaps = [s["facts"] for s in lesson.select(phase="E.swap")]
    assert [s["function"] for s in swaps] == ["designs_f", "designs_g"]
    assert swaps[0]["slot"] == swaps[1]["slot"]
    assert swaps[1]["old"] == swaps[1]["new"] == lesson.facts["tramp"]
    g = lesson.select(phase="E.swap")[1]
    row = next(r for r in g["stack"] if r["addr"] == swaps[1]["slot"])
    assert row["sp"] and "now kretprobe_trampoline" in row["note"]


def test_the_trap_numbers_leave_no_gap_for_the_quiet_steps(lesson):
    traps = [(s["trap_no"], s["vector"]) for s in lesson.steps if s["trap_no"]]
    assert traps == [(1, 3), (3, 3), (5, 3)]          # the #DBs 2 and 4 are not narrated
    assert lesson.final()["counters"] == {"int3": 3, "debug": 2, "slot_insns": 2}
