"""kpemu demo multi-kretprobe: R1 and R2 on fib, fib(2) -- R2's instance holds the real
return address, R1's the trampoline; one int3 per return reports R1 then R2."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("multi-kretprobe")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 5


def test_entries_and_returns_in_order(lesson):
    rows = [(s["phase"], s["facts"]["probe"], s["facts"]["n"], s["facts"]["is_tramp"])
            for s in lesson.steps if s["phase"] in ("E.instance", "R.handler")]
    assert rows == [
        ("E.instance", "R2", 2, False), ("E.instance", "R1", 2, True),
        ("E.instance", "R2", 1, False), ("E.instance", "R1", 1, True),
        ("R.handler", "R1", 1, True), ("R.handler", "R2", 1, False),
        ("E.instance", "R2", 0, False), ("E.instance", "R1", 0, True),
        ("R.handler", "R1", 0, True), ("R.handler", "R2", 0, False),
        ("R.handler", "R1", 2, True), ("R.handler", "R2", 2, False)]


def test_the_bucket_at_the_deepest_point(lesson):
    f = lesson.facts
    step = lesson.select(phase="E.instance")[3]          # fib(1), R1's instance taken
    assert [(ri["rp"], ri["ret_addr"]) for ri in step["kprobes"]["bucket"]] == [
        ("R1 r:fib+0x0", f["tramp"]), ("R2 r:fib+0x0", lesson.facts["taken"][2][2]),
        ("R1 r:fib+0x0", f["tramp"]), ("R2 r:fib+0x0", f["call_return"])]


def test_the_returns_resume_at_the_real_addresses(lesson):
    f = lesson.facts
    stops = [s["facts"]["ret_addr"] for s in lesson.select(phase="R.handler")
             if not s["facts"]["is_tramp"]]
    assert stops == [f["taken"][2][2], f["taken"][4][2], f["call_return"]]
    assert [s["facts"]["ax"] for s in lesson.select(phase="R.handler")] == [1, 1, 0, 0, 1, 1]
