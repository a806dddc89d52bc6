"""kpemu demo task-exit: do_exit's instance recycled by kprobe_flush_task -- the stack left
alone in design (b), the real return address written back in design (a)."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("task-exit")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 3


def test_both_designs_in_order(lesson):
    assert [(s["design"], s["phase"]) for s in lesson.steps] == [
        ("task", "arm"), ("task", "E.instance"), ("task", "flush"),
        ("stack", "arm"), ("stack", "E.instance"), ("stack", "flush")]
    assert lesson.designs == ["task", "stack"]
    assert "design (b)" in lesson.header() and "design (a)" in lesson.header()


def test_the_flush_steps(lesson):
    b, a = lesson.select(phase="flush")
    assert b["facts"]["tramp"] is True and a["facts"]["tramp"] is False
    assert b["extra"]["lines"][0].endswith("kretprobe_trampoline+0x0")
    assert a["extra"]["lines"][0].endswith("ret_from_fork+0xe")
    for step in (a, b):
        assert step["kprobes"]["bucket"] == []
        assert step["kprobes"]["pools"]["r:do_exit+0x0"]["free"] == 10
        assert step["where"]["sym"].startswith("kprobe_flush_task")
        assert (step["counters"]["int3"], step["counters"]["debug"]) == (1, 1)


def test_the_exiting_task(lesson):
    f = lesson.facts
    assert f["task"]["task"] == f["stack"]["task"] == lesson.first(
        phase="E.instance")["kprobes"]["task"]
    assert f["task"]["ret_addr"] == f["stack"]["ret_addr"]
