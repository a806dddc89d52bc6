"""kpemu demo unregister-inflight: busy1's instance orphaned by unregister_kretprobe, its
return resumed at the caller with no handler, the orphan freed."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("unregister-inflight")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 5


def test_phases(lesson):
    assert [s["phase"] for s in lesson.steps] == [
        "before", "arm", "E.instance", "disarm", "orphaned", "R.orphan", "R.freed",
        "resume"]


def test_the_stack_keeps_the_trampoline_after_unregister(lesson):
    step = lesson.first(phase="orphaned")
    assert step["facts"]["orphans"] == 1
    slot = lesson.facts["slot"]
    row = next(r for r in step["stack"] if r["addr"] == slot)
    assert row["value"] == step["facts"]["slot_value"]
    assert row["sym"] == "kretprobe_trampoline+0x0"
    assert row["note"].startswith("was busy_thread+0x1b -> now kretprobe_trampoline")
    assert step["code"][0]["armed"] == ""                 # the byte is back


def test_the_orphans_return(lesson):
    ret = lesson.first(phase="R.orphan")
    assert ret["facts"]["ax"] == 90094531784179429        # busy_sum(10000)
    assert ret["kprobes"]["task"].startswith("busy1-")
    assert ret["kprobes"]["bucket"][0]["rp"] == "orphan"
    assert ret["counters"] == {"int3": 2, "debug": 1, "slot_insns": 1}
    resume = lesson.first(phase="resume")
    assert resume["regs"]["ip"] == lesson.facts["ret_addr"]
    assert resume["where"]["sym"] == "busy_thread+0x1b"
