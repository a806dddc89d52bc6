"""kpemu demo entry-data: ri->data from entry_handler to handler timing busy1's busy_sum;
busy2's call declined with the stack untouched."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("entry-data")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 4


def test_phases(lesson):
    assert [s["phase"] for s in lesson.steps] == [
        "before", "arm", "E.entry", "E.veto", "E.untouched", "R.handler", "disarm"]


def test_the_data_panel(lesson):
    entry = lesson.first(phase="E.entry")
    ret = lesson.first(phase="R.handler")
    assert entry["extra"]["title"] == ret["extra"]["title"] == "ri->data"
    assert entry["extra"]["lines"] == ret["extra"]["lines"]      # read back unchanged
    start = entry["clock"]
    assert entry["extra"]["lines"][0] == "bytes  " + (
        start.to_bytes(8, "little") + (10000).to_bytes(8, "little")).hex(" ")
    assert ret["facts"]["took"] == ret["clock"] - start > 0
    assert ret["facts"]["ax"] == 90094531784179429


def test_the_declined_call(lesson):
    veto = lesson.first(phase="E.veto")
    assert veto["facts"] == {"task": veto["kprobes"]["task"], "value": 1}
    assert veto["kprobes"]["task"].startswith("busy2-")
    after = lesson.first(phase="E.untouched")
    assert after["kprobes"]["bucket"] == []                  # busy2 holds nothing
    row = next(r for r in after["stack"] if r["addr"] == after["facts"]["slot"])
    assert row["sym"] == "busy_thread+0x1b" and row["note"] == ""
