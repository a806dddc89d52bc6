"""kpemu demo exec-bug: flush_old_exec's instance recycled by flush_thread on the exec path
(2.6.13) -- the kretprobe BUG at its return; with the later fix the handler fires."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("exec-bug")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 4


def test_both_variants_in_order(lesson):
    assert [(s["facts"].get("variant"), s["phase"]) for s in lesson.steps] == [
        ("2.6.13", "arm"), ("2.6.13", "E.instance"), ("2.6.13", "flush"),
        ("2.6.13", "R.int3"), ("2.6.13", "oops"),
        ("fixed", "arm"), ("fixed", "E.instance"), ("fixed", "flush"),
        ("fixed", "R.handler")]


def test_the_trampoline_trap_keeps_its_number(lesson):
    """The entry's int3 and #DB are folded away, but the trampoline's int3 is trap 3."""
    step = lesson.first(phase="R.int3")
    assert (step["trap_no"], step["vector"]) == (3, 3)
    assert (step["counters"]["int3"], step["counters"]["debug"]) == (2, 1)
    assert step["kprobes"]["bucket"] == []


def test_the_oops_report(lesson):
    oops = lesson.first(phase="oops")
    lines = oops["extra"]["lines"]
    assert lines[0].startswith("kpemu: Oops: kernel BUG: kretprobe BUG")
    assert lines[2] == "RIP: kretprobe_trampoline+0x1/0xf"
    assert "Call Trace:" in lines and not any(ln.startswith(" | ") for ln in lines)
    assert oops["facts"]["task"].startswith("true-")


def test_the_fix_keeps_the_instance(lesson):
    flush = [s for s in lesson.select(phase="flush") if s["facts"]["variant"] == "fixed"][0]
    assert flush["facts"]["kept"] == 1 and len(flush["kprobes"]["bucket"]) == 1
    ret = lesson.first(phase="R.handler")
    assert ret["facts"]["ax"] == 0 and ret["facts"]["task"].startswith("true-")
