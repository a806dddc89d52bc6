"""kpemu demo observer: a probed run (handlers running guest code included) scheduled
exactly like the unprobed one; a stop at hit 17 replayed from a snapshot byte for byte."""

import pytest
from tests.demos.conftest import recorded



@pytest.fixture(scope="module")
def lesson():
    return recorded("observer")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 4


def test_phases(lesson):
    assert [s["phase"] for s in lesson.steps] == ["before", "probed", "diff", "hit", "replay"]


def test_the_probed_run(lesson):
    f = lesson.facts
    probed = lesson.first(phase="probed")["facts"]
    assert probed["clock"] == lesson.first(phase="before")["facts"]["clock"]
    assert probed["calls"] > 0 and probed["int3"] > probed["calls"]
    assert probed["hidden"] == probed["int3"] + probed["by_calls"] == f["hidden"]
    diff = lesson.first(phase="diff")
    assert diff["facts"]["diff"] == [] and diff["facts"]["ticks"] == len(f["plain_ticks"])
    assert diff["extra"]["lines"][-1].endswith("diff: empty")


def test_the_replayed_step(lesson):
    hit, replay = lesson.first(phase="hit"), lesson.first(phase="replay")
    for key in ("clock", "regs", "stack", "code", "slot", "kprobes", "counters", "facts"):
        assert hit[key] == replay[key], key
    assert hit["facts"]["hits"] == 17
    assert hit["where"]["sym"] == "mix_switch+0x4"
