"""kpemu demo designs: design (a) vs (b), recorded once; plus its target module."""

import copy
import shutil
import subprocess
from pathlib import Path

import pytest

from kprobes.demos.catalogue import DEMOS
from kprobes.demos.lesson import Lesson
from kprobes.demos.lessons import designs, returns
from kprobes.demos.stepper import Navigator
from tests.demos.conftest import recorded

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lesson():
    return recorded("designs")


def _main(lesson, design):
    return [s for s in lesson.steps if s["design"] == design and
            s["phase"].split(".")[0] not in ("irq", "tail", "exec")]


def _rows(steps):
    out = []
    for s in steps:
        if s["phase"] != "before" and (not out or out[-1] != s["phase"]):
            out.append(s["phase"])
    return out


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 9


def test_rows_aligned_by_phase(lesson):
    assert _rows(_main(lesson, "stack")) == list(returns.PHASES)
    assert _rows(_main(lesson, "task")) == [p for p in returns.PHASES
                                            if p not in ("R.db", "R.post")]


def test_four_traps_against_three(lesson):
    def traps(design):
        return [(s["vector"], s["phase"]) for s in _main(lesson, design)
                if s["trap_no"] is not None]
    assert traps("stack") == [(3, "E.int3"), (1, "E.db"), (3, "R.int3"), (1, "R.db")]
    assert traps("task") == [(3, "E.int3"), (1, "E.db"), (3, "R.int3")]
    assert lesson.facts["stack"]["traps"] == 4 and lesson.facts["task"]["traps"] == 3


def test_the_table_of_differences(lesson):
    table = lesson.first(phase="table")
    assert table["design"] is None
    lines = table["extra"]["lines"]
    assert lines[0].split() == ["design", "(a),", "June", "2005", "design", "(b),", "2.6.13"]
    assert lines[-1].split() == ["this", "run", "4", "traps", "3", "traps"]
    assert any(line.startswith("kprobe_flush_task") for line in lines)
    assert all(len(line) <= 96 for line in lines)


def test_stepper_switches_design_at_the_same_phase(lesson):
    nav = Navigator(lesson)
    assert nav.designs == ["task", "stack"] and nav.design == "task"
    while nav.step["phase"] != "R.int3":
        assert nav.next()
    assert nav.switch_design()
    assert (nav.design, nav.step["phase"], nav.step["vector"]) == ("stack", "R.int3", 3)
    while nav.step["phase"] != "table":
        assert nav.next()
    assert nav.switch_design() and nav.step["phase"] == "table"   # shared by both tracks
    nav.switch_design()
    assert nav.design == "stack" and nav.step["phase"] == "table"
    while nav.step["phase"] != "irq.result":
        assert nav.next()
    assert nav.step["extra"]["title"] == "OOPS"
    nav.switch_design()
    assert (nav.design, nav.step["phase"], nav.step["extra"]) == ("task", "irq.result", None)


def test_irq_stack(lesson):
    a, b = lesson.facts["irq.stack"], lesson.facts["irq.task"]
    assert a["low"] <= a["masked"] < a["slot"] < a["high"]
    assert a["masked"] == a["slot"] & ~0x1FFF
    ret = next(s for s in lesson.select(design="stack", phase="irq.return")
               if s["title"] == "trampoline_probe_handler")["facts"]
    assert ret["task"] == designs.IRQ_ARG               # the handler's buffer, not a task
    taken = lesson.first(design="stack", phase="irq.entry", event="kprobes.instance")
    assert taken["facts"]["task"] == 0 and taken["facts"]["bucket"] == 0 != ret["bucket"]
    oops = lesson.first(design="stack", phase="irq.result")
    assert oops["extra"]["lines"][0] == (
        f"kpemu: Oops: kernel BUG: kretprobe BUG: no instance for the return slot "
        f"{a['slot']:#x}")
    assert (a["handled"], b["handled"], b["value"]) == (0, 1, designs.IRQ_ARG + 1)
    assert b["oops"] is None


def test_tail_call(lesson):
    a, b = lesson.facts["tail.stack"], lesson.facts["tail.task"]
    assert a["told"] == [("designs_leaf", a["f_leaf_ret"]), ("designs_g", a["f_leaf_ret"]),
                         ("designs_f", a["tail_ret"])]
    assert b["told"] == [("designs_leaf", b["f_leaf_ret"]), ("designs_g", b["tramp"]),
                         ("designs_f", b["tail_ret"])]
    assert (a["value"], b["value"], a["traps"], b["traps"]) == (22, 22, 10, 8)


def test_exec(lesson):
    a, b = lesson.facts["exec.stack"], lesson.facts["exec.task"]
    assert (a["reason"], a["handled"], b["reason"], b["handled"]) == ("halt", 0, "oops", 0)
    flushed = [s["design"] for s in lesson.select(phase="exec.flush")]
    assert flushed == ["stack", "task"]
    assert "wrote each instance's ret_addr back" in lesson.select(phase="exec.flush")[0][
        "narration"]


def test_a_broken_trace_fails_its_claims(lesson):
    steps = copy.deepcopy(lesson.steps)
    for s in steps:
        if s["design"] == "stack" and s["phase"] == "R.db":
            s["phase"] = "R.handler"                      # as if (a) stepped no nop
    bad = Lesson(DEMOS["designs"], steps, lesson.facts)
    assert [c["text"] for c in bad.failed_claims()] == [
        "(a) has every phase row, (b) all but R.db and R.post"]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed: cannot "
                    "rebuild the committed target module")
def test_the_committed_target_module_is_what_its_source_builds(tmp_path):
    out = tmp_path / "designs_targets.o"
    src = REPO / "kernel_images" / "lessons" / "designs_targets.S"
    subprocess.run(["gcc", "-c", "-Wa,--noexecstack", "-o", str(out), str(src)], check=True)
    assert out.read_bytes() == Path(designs.TARGETS).read_bytes(), \
        "kernel_images/lessons/designs_targets.o is stale: run `make images`"
