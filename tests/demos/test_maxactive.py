"""kpemu demo maxactive: recursion deeper than the pool, a preempted task holding the only
instance, a re-entered entry kprobe, and the default pool size."""

import pytest

from kprobes.kretprobe import NR_CPUS
from tests.demos.conftest import recorded


@pytest.fixture(scope="module")
def lesson():
    return recorded("maxactive")


def scene(lesson, name):
    return [s for s in lesson.steps if s["facts"].get("scene") == name]


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 7


def test_recursion_scene_order(lesson):
    """fib(4) with maxactive 2: fib(4) and fib(3) take the two instances, the next four
    entries miss, fib(3) returns (handler), fib(2) takes the freed instance, ..."""
    steps = [(s["phase"], s["facts"].get("arg")) for s in scene(lesson, "recursion")
             if s["phase"] in ("E.instance", "miss", "R.handler")]
    assert steps == [("E.instance", 4), ("E.instance", 3), ("miss", 2), ("miss", 1),
                     ("miss", 0), ("miss", 1), ("R.handler", 3), ("E.instance", 2),
                     ("miss", 1), ("miss", 0), ("R.handler", 2), ("R.handler", 4)]
    misses = [s["facts"]["rp_nmissed"] for s in scene(lesson, "recursion")
              if s["phase"] == "miss"]
    assert misses == [1, 2, 3, 4, 5, 6]
    descent = [s for s in lesson.steps if s["facts"].get("descent")]
    assert len(descent) == 1 and descent[0]["facts"]["arg"] == 1
    assert "outermost 2 are instrumented and the 2 inner ones missed" in \
        descent[0]["narration"]


def test_the_panel_tells_the_two_counters_apart(lesson):
    step = next(s for s in scene(lesson, "recursion") if s["phase"] == "miss")
    kp = step["kprobes"]
    assert kp["pools"]["r:fib+0x0"] == {"free": 0, "used": 2, "nmissed": 1}
    assert kp["nmissed"]["r:fib+0x0"] == 0          # the entry kprobe's: unmoved
    assert len(kp["bucket"]) == 2


def test_across_tasks(lesson):
    steps = [s for s in scene(lesson, "tasks") if s["phase"] in
             ("E.instance", "tick", "miss", "R.handler", "tally")]
    assert [s["phase"] for s in steps] == ["E.instance", "tick", "miss", "R.handler",
                                           "tally"]
    taken, tick, miss, ret, tally = steps
    assert taken["facts"]["task"].startswith("busy1-")
    assert tick["facts"]["task"] == taken["facts"]["task"]
    assert tick["kprobes"]["pools"]["r:busy_sum+0x0"]["used"] == 1
    assert tick["where"]["sym"].startswith("busy_sum+")      # preempted inside it
    assert miss["facts"]["task"].startswith("busy2-") and miss["facts"]["rp_nmissed"] == 1
    assert miss["kprobes"]["bucket"] == []      # busy2's bucket: nothing of its own
    assert ret["facts"]["task"] == taken["facts"]["task"]
    assert ret["facts"]["ax"] == 90094531784179429             # busy_sum(10000)
    assert tally["facts"]["line"] == "busy2[8]: busy_sum(10000) = 90094531784179429"
    assert tally["facts"]["returns"] == 1 and tally["facts"]["entries"] == 2


def test_reentry_scene(lesson):
    steps = scene(lesson, "reentry")
    phases = [s["phase"] for s in steps]
    assert phases == ["scene", "E.instance", "R.handler", "miss", "tally"]
    miss = steps[3]
    assert miss["facts"] == {"scene": "reentry", "cause": "reentered", "kp_nmissed": 1,
                             "rp_nmissed": 0, "task": miss["facts"]["task"]}
    assert miss["kprobes"]["saved"] == "trampoline"   # the one-level save of re-entry
    assert lesson.facts["reentry"]["maxactive"] == max(10, 2 * NR_CPUS)


def test_trap_counts(lesson):
    """(int3, #DB): (2, 1) per instrumented call, (1, 1) per missed one, the re-entered
    fib(1) like a missed one."""
    last = lesson.final()["counters"]
    recursion = (3 * 2 + 6 * 1, 3 + 6)        # 3 instrumented, 6 missed
    tasks = (2 + 1, 1 + 1)
    reentry = (2 + 1, 1 + 1)
    assert (last["int3"], last["debug"]) == tuple(map(sum, zip(recursion, tasks, reentry)))
