"""kpemu demo stacktrace: the trampoline in backtraces, raw and resolved, recorded once."""

import copy

import pytest

from kprobes.demos.catalogue import DEMOS
from kprobes.demos.lesson import Lesson
from tests.demos.conftest import recorded


@pytest.fixture(scope="module")
def lesson():
    return recorded("stacktrace")


def _body(lesson):
    return next(s for s in lesson.steps if s["title"] == "__builtin_return_address(0)")


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 6


def test_steps_in_order(lesson):
    told = [(s["phase"], s["title"]) for s in lesson.steps if s["event"] != "fastforward"]
    assert told == [("before", "before"), ("E.pre/swap", "arch_prepare_kretprobe"),
                    ("E.pre/swap", "instance taken"),
                    ("body", "__builtin_return_address(0)"),
                    ("R.handler", "backtrace in the handler"),
                    ("R.handler", "how it is resolved"), ("R.handler", "instance recycled"),
                    ("resume", "after the return")]


def test_the_return_slot_while_the_function_runs(lesson):
    f = lesson.facts
    step = _body(lesson)
    row = next(r for r in step["stack"] if r["addr"] == f["body"]["slot"])
    assert row["note"] == "was system_call+0x27 -> now kretprobe_trampoline"
    assert next(r for r in step["stack"] if r["addr"] == f["body"]["bp"])["note"] == \
        "<- rbp"
    assert row["value"] == f["tramp"] and f["body"]["slot"] == f["body"]["bp"] + 8
    assert step["where"]["sym"] == "sys_mkdir+0x12"        # the pre_handler's ip: probe + 1


def test_backtraces(lesson):
    f = lesson.facts
    assert f["body"]["raw"] == ["sys_mkdir+0x12/0xf0", "kretprobe_trampoline+0x0/0xf",
                                "ret_from_fork+0x6/0x10"]
    assert f["body"]["resolved"] == ["sys_mkdir+0x12/0xf0", "system_call+0x27/0x2c",
                                     "ret_from_fork+0x6/0x10"]
    assert f["handler"]["raw"] == ["kretprobe_trampoline+0x1/0xf", "ret_from_fork+0x6/0x10"]
    assert f["handler"]["resolved"] == ["system_call+0x27/0x2c", "ret_from_fork+0x6/0x10"]
    marked = [line for line in _body(lesson)["extra"]["lines"]
              if line.startswith("*")]
    assert marked == [line for line in marked if "#1 kretprobe_trampoline+0x0/0xf" in line]
    assert len(marked) == 1


def test_the_resolver_uses_the_instance_of_that_slot(lesson):
    f = lesson.facts
    step = next(s for s in lesson.steps if s["title"] == "how it is resolved")
    assert step["facts"] == {"slot": f["body"]["slot"], "ret_addr": f["caller"],
                             "instances": 1}
    assert [ri["slot"] for ri in step["kprobes"]["bucket"]] == [f["body"]["slot"]]


def test_a_broken_trace_fails_its_claims(lesson):
    facts = copy.deepcopy(lesson.facts)
    facts["body"]["raw"][1] = facts["body"]["resolved"][1]    # as if nothing were hijacked
    bad = Lesson(DEMOS["stacktrace"], lesson.steps, facts)
    assert [c["text"] for c in bad.failed_claims()] == [
        "the raw backtrace from its body names kretprobe_trampoline as the caller"]
