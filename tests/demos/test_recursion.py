"""kpemu demo recursion: fib(5) under a kretprobe with maxactive == its depth -- the task's
instances grow and shrink at the head of its bucket, handlers innermost first."""

import pytest

from kprobes.demos import models
from tests.demos.conftest import recorded


@pytest.fixture(scope="module")
def lesson():
    return recorded("recursion")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 7


def test_one_step_per_call_and_per_return(lesson):
    phases = [s["phase"] for s in lesson.steps]
    assert phases[:2] == ["before", "arm"]
    assert phases[-2:] == ["return", "disarm"]
    calls = models.fib_calls(5)
    assert phases.count("E.instance") == phases.count("R.recycle") == calls == 15
    assert "fastforward" not in [s["event"] for s in lesson.steps]   # folded
    assert len(lesson.steps) == 2 * calls + 4


def test_the_bucket_depth_walks_fibs_call_tree(lesson):
    depths = [s["facts"]["depth"] for s in lesson.steps
              if s["phase"] in ("E.instance", "R.recycle")]
    assert depths[:8] == [1, 2, 3, 4, 5, 4, 5, 4]      # fib(5)..fib(1), back, fib(0)...
    assert depths[-1] == 0 and max(depths) == 5
    for step in lesson.select(phase="E.instance"):
        assert len(step["kprobes"]["bucket"]) == step["facts"]["depth"]
        pool = step["kprobes"]["pools"]["r:fib+0x0"]
        assert pool["free"] + pool["used"] == 5 and pool["used"] == step["facts"]["depth"]


def test_return_addresses(lesson):
    f = lesson.facts
    first = lesson.first(phase="E.instance")
    assert first["facts"]["n"] == 5 and first["facts"]["ret_addr"] == f["call_return"]
    assert "m.call return" in first["narration"]
    inner = {s["facts"]["ret_addr"] for s in lesson.select(phase="E.instance")[1:]}
    # fib's two call sites: after fib(n - 1) and after fib(n - 2)
    assert inner == {f["fn"] + 0x19, f["fn"] + 0x24}


def test_handlers_innermost_first_with_the_return_values(lesson):
    f = lesson.facts
    returned = [(s["facts"]["n"], s["facts"]["ax"]) for s in lesson.select(phase="R.recycle")]
    assert returned[:3] == [(1, 1), (0, 0), (2, 1)]
    assert returned[-1] == (5, 5)
    assert [(n, ax) for n, ax, _r in f["handled"]] == returned


def test_trap_counters_per_step(lesson):
    """Each entry step is after one more int3 (and the #DBs of the calls before); each
    return step after one more int3 and no #DB."""
    last = lesson.final()["counters"]
    assert (last["int3"], last["debug"], last["slot_insns"]) == (30, 15, 15)
    seen = [(s["phase"], s["counters"]["int3"], s["counters"]["debug"])
            for s in lesson.steps if s["phase"] in ("E.instance", "R.recycle")]
    assert seen[:3] == [("E.instance", 1, 0), ("E.instance", 2, 1), ("E.instance", 3, 2)]
    assert seen[5] == ("R.recycle", 6, 5)


def test_the_clock_does_not_move(lesson):
    before = lesson.first(phase="before")["clock"]
    assert lesson.first(phase="return")["clock"] == before
    assert lesson.facts["result"] == 5
