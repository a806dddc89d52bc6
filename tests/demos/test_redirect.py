"""kpemu demo redirect: a pre_handler that sets regs.ip and returns 1 -- one trap, no
single-step, no post_handler."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("redirect")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 4


def test_steps(lesson):
    assert [(s["event"], s["phase"]) for s in lesson.steps] == [
        ("note", "before"), ("kprobes.register", "arm"), ("kprobes.arm", "arm"),
        ("kprobes.trap", "int3"), ("kprobes.handler", "pre"),
        ("kprobes.handler-returned", "pre"), ("note", "return"),
        ("kprobes.disarm", "disarm")]
    assert [s["trap_no"] for s in lesson.steps if s["trap_no"]] == [1]


def test_the_returned_step_shows_the_new_ip(lesson):
    f = lesson.facts
    step = lesson.first(event="kprobes.handler-returned")
    assert step["regs"]["ip"] == f["instead"] and "ip" in step["changed"]
    assert step["where"]["sym"] == "mix_rol+0x0"
    assert step["kprobes"]["status"] == "KPROBE_HIT_ACTIVE"
    assert lesson.first(phase="return")["kprobes"]["status"] == "-"


def test_the_values(lesson):
    f = lesson.facts
    assert f["want"] == {"mix_add": 0x9E3779BA, "mix_rol": 0x20000}
    assert f["got"] == 0x20000
