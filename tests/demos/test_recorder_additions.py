"""What the lessons of demos-c added to the recorder and the scenes: folding, quiet events,
labels and names, trap numbers that count folded traps, run_until_event, run_until and
the shared claims."""

import pytest

from kprobes import Kprobe, Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Demo, Lesson, LessonError, Recorder, trap_counts


@pytest.fixture
def booted():
    return scenes.booted()


def test_fold_makes_no_fastforward_steps_and_keeps_the_counters(booted):
    m, k = booted
    rec = Recorder(m, k)
    rec.fold = True
    rec.quiet(*rec.narrators)
    ran = []
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=lambda p, regs: ran.append(
        rec.ran_since_step()) and 0))
    with rec:
        rec.step("before", "before", phase="before")
        assert m.call("fib", 3) == 2
        rec.step("after", "after", phase="after")
    assert [s["phase"] for s in rec.steps] == ["before", "after"]
    # fib(3) makes 5 calls: one instruction in the slot for each
    assert rec.steps[-1]["counters"] == {"int3": 5, "debug": 5, "slot_insns": 5}
    assert ran[0] == 0 and all(n > 0 for n in ran[1:])       # guest code between hits


def test_without_fold_the_same_run_has_fastforward_steps(booted):
    m, k = booted
    rec = Recorder(m, k)
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=lambda p, regs: 0))
    with rec:
        m.call("fib", 2)
    kinds = [s["event"] for s in rec.steps]
    assert "fastforward" in kinds and kinds.count("kprobes.trap") == 6


def test_a_folded_lesson_numbers_traps_by_the_counters(booted):
    m, k = booted
    rec = Recorder(m, k)
    rec.fold = True
    rec.quiet(*rec.narrators)
    rec.narrators["kprobes.trap"] = lambda rec, ev: (
        "trap", "the trampoline", "R.int3", {}) if ev.probe.internal else None
    k.register_kretprobe(Kretprobe(symbol_name="fib"))
    with rec:
        m.call("fib", 1)
    [step] = rec.steps
    assert (step["trap_no"], step["vector"]) == (3, 3)       # after the entry's int3 and #DB


def test_labels_and_names(booted):
    m, k = booted
    rec = Recorder(m, k)
    assert rec.short(m.call_return_address) == "m.call return"
    p = Kprobe(symbol_name="fib")
    k.register_kprobe(p)
    rec.names[p] = "P1"
    assert rec.probe_label(p) == "P1 p:fib+0x0"
    assert list(rec.kprobes_state()["nmissed"]) == ["P1 p:fib+0x0"]


def test_a_quiet_swap_still_notes_the_stack_slot(booted):
    m, k = booted
    rec = Recorder(m, k)
    rec.quiet(*rec.narrators)
    seen = {}
    rp = Kretprobe(symbol_name="fib", handler=lambda ri, regs: seen.setdefault(
        "slot", ri.stack_addr))
    k.register_kretprobe(rp)
    with rec:
        m.call("fib", 1)
    assert rec.steps == []
    old, new = rec.stack_notes[seen["slot"]]
    assert old == m.call_return_address and new == m.symbols.lookup_name(
        "kretprobe_trampoline")


def test_run_until_event_stops_at_the_event_and_leaves_no_observer(booted):
    m, k = booted
    k.register_kprobe(Kprobe(symbol_name="sys_getpid"))
    observers = list(m.observers)
    scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.fixup")
    assert m.observers == observers
    assert m.symbols.format(m.engine.reg("ip")).startswith("sys_getpid+0x9/")
    assert k.traps["int3"] == k.traps["debug"] == 1


def test_run_until_and_its_failure(booted):
    m, _k = booted
    scenes.run_until(m, lambda: "mkdir: hello" in m.console)
    assert "mkdir: hello" in m.console and m.clock.now < scenes.RUN_LIMIT
    with pytest.raises(LessonError, match="ended with 'halt'"):
        scenes.run_until(m, lambda: False, chunk=1_000_000)


def test_the_shared_claims():
    def lesson(counters, same):
        demo = Demo("t", "?", "S", (), None)
        steps = [{"counters": counters, "design": None}]
        return Lesson(demo, steps, {"same_final": same})
    ok = lesson({"int3": 2, "debug": 1, "slot_insns": 1}, (True, "identical"))
    assert trap_counts(2, 1)(ok) == (True, "counted {'int3': 2, 'debug': 1}")
    assert trap_counts(1, 1)(ok)[0] is False
    claim = scenes.same_final_claim()
    assert claim.check(ok) == (True, "identical")
    assert claim.check(lesson(ok.steps[0]["counters"], (False, "differs in clock"))) == \
        (False, "differs in clock")
