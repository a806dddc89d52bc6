"""kpemu demo reentry: P1's pre_handler calls mix_add, probed by P2 -- P2 re-entered:
handlers skipped, nmissed 1, its instruction stepped anyway, P1 saved and restored."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("reentry")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 6


def test_the_four_traps_in_order(lesson):
    traps = [(s["trap_no"], s["vector"], s["phase"]) for s in lesson.steps if s["trap_no"]]
    assert traps == [(1, 3, "int3"), (2, 3, "int3.reentered"), (3, 1, "db.reentered"),
                     (4, 1, "db")]


def test_phases(lesson):
    assert [s["phase"] for s in lesson.steps] == [
        "before", "arm", "arm", "arm", "arm", "body", "int3", "pre", "int3.reentered",
        "miss", "ss", "db.reentered", "resume.reentered", "P1.pre", "ss", "db", "post",
        "resume", "disarm", "disarm"]


def test_the_state_at_each_trap(lesson):
    p1, p2 = "P1 p:sys_getpid+0x0", "P2 p:mix_add+0x0"
    state = {s["phase"]: (s["kprobes"]["status"], s["kprobes"]["current"],
                          s["kprobes"]["saved"]) for s in lesson.steps}
    assert state["int3.reentered"] == ("KPROBE_HIT_ACTIVE", p1, None)   # as found
    assert state["miss"] == ("KPROBE_HIT_ACTIVE", p2, p1)               # P1 saved
    assert state["db.reentered"] == ("KPROBE_REENTER", p2, p1)
    assert state["P1.pre"] == ("KPROBE_HIT_ACTIVE", p1, None)           # restored
    assert state["db"] == ("KPROBE_HIT_SS", p1, None)


def test_p2_counts_the_miss(lesson):
    miss = lesson.first(phase="miss")
    assert miss["facts"] == {"probe": "P2", "cause": "reentered", "nmissed": 1}
    assert miss["kprobes"]["nmissed"] == {"P1 p:sys_getpid+0x0": 0, "P2 p:mix_add+0x0": 1}
    assert lesson.first(phase="pre")["narration"].startswith("P1's pre_handler")


def test_the_slot_panel_follows_the_stepped_probe(lesson):
    f = lesson.facts
    slots = {s["phase"]: s["slot"]["addr"] for s in lesson.steps if s["slot"]}
    assert slots["ss"] == slots["db"] == f["p1_slot"]
    assert slots["db.reentered"] == f["p2_slot"]
    assert [s["slot"]["addr"] for s in lesson.select(event="kprobes.singlestep")] == \
        [f["p2_slot"], f["p1_slot"]]
