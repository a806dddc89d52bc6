"""kpemu demo kretprobe: one probed return of sys_mkdir, design (b), recorded once."""

import copy

import pytest

from kprobes.demos.catalogue import DEMOS
from kprobes.demos.lesson import Lesson
from tests.demos.conftest import recorded


@pytest.fixture(scope="module")
def lesson():
    return recorded("kretprobe")


def _rows(lesson):
    """The phases in order, each once per run of steps."""
    out = []
    for s in lesson.steps:
        if not out or out[-1] != s["phase"]:
            out.append(s["phase"])
    return out


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 11


def test_phases_in_order(lesson):
    assert _rows(lesson) == ["before", "E.int3", "E.pre/swap", "E.db", "body", "R.ret",
                             "R.int3", "R.handler", "resume"]
    assert {s["design"] for s in lesson.steps} == {"task"}


def test_three_traps_two_at_the_entry_one_at_the_trampoline(lesson):
    traps = [(s["trap_no"], s["vector"], s["phase"]) for s in lesson.steps
             if s["trap_no"] is not None]
    assert traps == [(1, 3, "E.int3"), (2, 1, "E.db"), (3, 3, "R.int3")]
    assert lesson.final()["counters"] == {"int3": 2, "debug": 1, "slot_insns": 1}


def test_the_swapped_slot_is_annotated(lesson):
    f = lesson.facts
    swap = lesson.first(event="kprobes.swap")
    row = next(r for r in swap["stack"] if r["addr"] == f["slot"])
    assert row["sp"] and row["changed"] and row["swapped"]
    assert row["value"] == f["tramp"]
    assert row["note"] == "was system_call+0x27 -> now kretprobe_trampoline"
    assert swap["facts"]["old"] == f["ret_addr"] == lesson.first(phase="resume",
                                                                 event="note")["where"]["ip"]


def test_instance_taken_to_the_head_of_the_tasks_bucket(lesson):
    taken = lesson.first(event="kprobes.instance")
    assert taken["facts"]["free"] == 3
    assert taken["kprobes"]["pools"]["r:sys_mkdir+0x0"] == {"free": 3, "used": 1,
                                                           "nmissed": 0}
    assert taken["kprobes"]["task"].startswith("mkdir-")
    assert [ri["ret"] for ri in taken["kprobes"]["bucket"]] == ["system_call+0x27"]
    assert "4 -> 3 free" in taken["narration"]


def test_ret_lands_on_the_armed_trampoline(lesson):
    step = lesson.first(phase="R.ret")
    assert step["where"]["sym"] == "kretprobe_trampoline+0x0"
    here = next(r for r in step["code"] if r["mark"] == ">")
    assert (here["armed"], here["bytes"], here["text"]) == ("cc", "90", "nop")
    assert step["regs"]["sp"] == lesson.facts["slot"] + 8


def test_handler_sees_the_return_value_and_no_step_follows(lesson):
    handler = next(s for s in lesson.steps if s["title"] == "sys_mkdir handler")
    assert handler["facts"]["ax"] == 0                  # mkdir("/tmp") succeeds
    after = lesson.steps[lesson.steps.index(lesson.first(phase="R.int3")):]
    assert [s["event"] for s in after if s["event"] in
            ("kprobes.singlestep", "kprobes.fixup")] == []
    returned = lesson.first(event="kprobes.handler-returned")
    assert returned["facts"]["value"] == 1
    assert returned["facts"]["ip"] == lesson.facts["ret_addr"]


def test_backtrace_raw_and_resolved(lesson):
    step = next(s for s in lesson.steps if s["title"] == "backtrace in the handler")
    assert step["facts"]["raw"] == ["kretprobe_trampoline+0x1/0xf", "ret_from_fork+0x6/0x10"]
    assert step["facts"]["resolved"] == ["system_call+0x27/0x2c", "ret_from_fork+0x6/0x10"]
    lines = step["extra"]["lines"]
    assert lines[1].startswith("* #0 kretprobe_trampoline+0x1/0xf")
    assert lines[1].rstrip().endswith("#0 system_call+0x27/0x2c")
    assert lines[2].startswith("  #1")


def test_a_broken_trace_fails_its_claims(lesson):
    steps = copy.deepcopy(lesson.steps)
    steps[-1]["counters"]["debug"] = 2                  # as if the return were stepped
    bad = Lesson(DEMOS["kretprobe"], steps, lesson.facts)
    assert [c["text"] for c in bad.failed_claims()] == [
        "traps == {int3: 2, debug: 1}: 3 for the probed call"]
