"""kpemu demo aggregate: two kprobes at sys_getpid+0 -- the aggregate, newest-first
handlers, one trap pair, the byte restored with the last probe."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("aggregate")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 5


def test_phases(lesson):
    assert [s["phase"] for s in lesson.steps] == [
        "before", "arm", "arm", "aggr", "body", "int3", "pre.aggr", "pre.child",
        "pre.child", "ss", "db", "post.aggr", "post.child", "post.child", "resume",
        "unregister", "disarm"]
    assert [s["facts"]["probe"] for s in lesson.steps if s["phase"].endswith(".child")] \
        == ["P2", "P1", "P2", "P1"]


def test_the_aggregate_takes_the_table_entry(lesson):
    step = lesson.first(phase="aggr")
    assert step["facts"]["children"] == ["P2", "P1"]
    assert step["code"][0]["armed"] == "cc"           # armed by P1, untouched since
    hit = lesson.first(phase="pre.child")
    assert hit["kprobes"]["current"] == "aggregate p:sys_getpid+0x0"
    assert set(hit["kprobes"]["nmissed"]) == {"P1 p:sys_getpid+0x0", "P2 p:sys_getpid+0x0"}


def test_post_handlers_see_the_shared_slot(lesson):
    slot = lesson.facts["slots"][0]
    posts = [s for s in lesson.steps if s["phase"] == "post.child"]
    assert [s["facts"]["ip"] for s in posts] == [slot + 9, slot + 9]   # mov gs:[0] is 9 bytes
    assert all(s["counters"] == {"int3": 1, "debug": 1, "slot_insns": 1} for s in posts)
