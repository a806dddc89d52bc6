"""kpemu demo int3: a bare breakpoint through the guest's IDT, recorded once per module."""

import pytest

from kprobes.demos.lessons.int3 import FRAME
from tests.demos.conftest import recorded


@pytest.fixture(scope="module")
def lesson():
    return recorded("int3")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 8


def test_the_steps_in_order(lesson):
    assert [s["phase"] for s in lesson.steps] == [
        "before", "poke", "body", "int3", "gate", "frame", "resume", "misdecoded",
        "return", "restore"]
    assert [s["trap_no"] for s in lesson.steps if s["trap_no"]] == [1]
    assert lesson.first(phase="int3")["vector"] == 3


def test_no_kprobes_on_the_machine(lesson):
    assert {s["kprobes"] is None for s in lesson.steps} == {True}
    assert lesson.final()["counters"] == {"int3": 1, "debug": 0, "slot_insns": 0}


def test_the_trap_saves_the_address_after_the_int3(lesson):
    f = lesson.facts
    step = lesson.first(phase="int3")
    assert step["regs"]["ip"] == step["facts"]["trap_ip"] == f["addr"] + 1
    assert lesson.first(phase="poke")["facts"] == {"addr": f["addr"], "old": 0x65,
                                                   "new": 0xCC}


def test_the_gate_and_the_frame(lesson):
    f = lesson.facts
    gate = lesson.first(phase="gate")
    assert gate["extra"]["lines"][0].split()[1:] == \
        [f"{b:02x}" for b in (f["int3_symbol"] & 0xFFFF).to_bytes(2, "little")] + \
        ["08", "00", "00", "ee"] + \
        [f"{b:02x}" for b in (f["int3_symbol"] >> 16).to_bytes(6, "little")] + ["00"] * 4
    frame = lesson.first(phase="frame")
    sp = frame["facts"]["sp"]
    assert frame["regs"]["sp"] == sp and frame["regs"]["ip"] == f["int3_symbol"]
    assert frame["flags"] == {"TF": 0, "IF": 0}
    labelled = {row["addr"]: (row["note"], row["value"]) for row in frame["stack"]}
    assert [labelled[sp + 8 * n] for n in range(5)] == \
        [(name, f["frame"][name]) for name in FRAME]
    assert f["frame"]["RIP"] == f["addr"] + 1 and f["frame"]["RFLAGS"] & 0x200


def test_resuming_one_byte_in(lesson):
    f = lesson.facts
    resume = lesson.first(phase="resume")
    assert resume["regs"]["ip"] == f["addr"] + 1 and resume["flags"]["IF"] == 1
    assert f["written"] == "mov rax, qword ptr gs:[0]"
    assert f["misread"] == "mov rax, qword ptr [0]"
    lines = resume["extra"]["lines"]
    assert any("65 48 8b 04 25 00 00 00 00" in line for line in lines)
    assert any(line.split()[1:] == ["48", "8b", "04", "25", "00", "00", "00", "00", "mov",
                                    "rax,", "qword", "ptr", "[0]"] for line in lines)
    assert lesson.first(phase="misdecoded")["changed"] == ["ax", "ip"]


def test_the_wrong_answer_reaches_the_console(lesson):
    f = lesson.facts
    assert f["returned"] == 0 and f["pid"] > 0
    assert f["console_line"] == f["unprobed_line"].replace(f"[{f['pid']}]", "[0]")
    assert lesson.final()["code"][0]["armed"] == ""     # the byte was put back


def test_the_narration_carries_the_numbers(lesson):
    f = lesson.facts
    assert f"{f['addr'] + 1:#x}" in lesson.first(phase="int3")["narration"]
    assert f"returned {f['returned']}" in lesson.first(phase="return")["narration"]
    assert f"has pid {f['pid']}" in lesson.first(phase="return")["narration"]
