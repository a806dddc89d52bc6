"""T6 of teaching-demos.md §4.4 and the recorder's own promises: every step is
self-contained, so going forward from the first step, back from the last and straight to
step k all show the same frame; recording never moves the guest clock."""

import re

import pytest

from kprobes.demos.catalogue import DEMOS
from kprobes.demos.render import WIDTH, render_frame
from kprobes.demos.stepper import Navigator

PANEL_KEYS = {"i", "n", "design", "clock", "phase", "event", "vector", "trap_no", "where",
              "title", "narration", "facts", "regs", "changed", "flags", "code", "slot",
              "stack", "kprobes", "counters", "extra"}


@pytest.mark.parametrize("name", list(DEMOS))
def test_forward_back_and_goto_reach_the_same_frame(lesson_of, frames_of, name):
    """For every k (in each design's track): going forward from the first step, back from
    the last, and straight to step k reach the same step and so the same frame; going back
    then forward is the identity."""
    lesson = lesson_of(name)
    frames = frames_of(name)
    for design in (lesson.designs or [None]):
        nav = Navigator(lesson)
        if design is not None and nav.design != design:
            nav.switch_design()
        track = nav.track
        nav.first()
        forward = [nav.step]
        while nav.next():
            forward.append(nav.step)
        backward = [nav.step]
        while nav.prev():
            backward.append(nav.step)
        assert [s["i"] for s in forward] == [s["i"] for s in track]
        assert [s["i"] for s in backward[::-1]] == [s["i"] for s in forward]
        for k, step in enumerate(track):
            assert nav.goto(step["i"]) and nav.step is forward[k]
            assert frames[nav.step["i"]] == frames[forward[k]["i"]]
            if nav.prev():
                nav.next()
                assert nav.step is forward[k]           # back then forward: identity


@pytest.mark.parametrize("name", list(DEMOS))
def test_every_step_carries_the_whole_state(lesson_of, name):
    lesson = lesson_of(name)
    for n, step in enumerate(lesson.steps, 1):
        assert set(step) == PANEL_KEYS
        assert (step["i"], step["n"]) == (n, len(lesson.steps))
        assert set(step["regs"]) >= {"ip", "sp", "flags", "ax"}
        assert step["flags"]["TF"] in (0, 1) and step["flags"]["IF"] in (0, 1)
        assert step["narration"] and len(step["narration"].split(". ")) <= 4


@pytest.mark.parametrize("name", list(DEMOS))
def test_frames_fit_in_100_columns(frames_of, name):
    for frame in frames_of(name).values():
        assert max(len(line) for line in frame.splitlines()) <= WIDTH


@pytest.mark.parametrize("name", list(DEMOS))
def test_colour_only_repeats_the_marks(lesson_of, frames_of, name):
    """--no-color output is the coloured output with the escape codes taken out."""
    for step in lesson_of(name).steps[:4]:
        coloured = render_frame(step, color=True)
        assert "\x1b[" in coloured
        assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == frames_of(name)[step["i"]]


def test_trap_numbers_count_up_and_name_their_vector(lesson_of):
    lesson = lesson_of("kprobe")
    traps = [s for s in lesson.steps if s["trap_no"] is not None]
    assert [(s["trap_no"], s["vector"]) for s in traps] == [(1, 3), (2, 1)]
    assert lesson.steps[traps[1]["i"] - 1]["counters"]["slot_insns"] == 1


def test_the_kprobe_lesson_tells_the_hit_in_order(lesson_of):
    lesson = lesson_of("kprobe")
    phases = [s["phase"] for s in lesson.steps]
    assert phases == ["before", "arm", "arm", "body", "int3", "pre", "ss", "db", "post",
                      "resume", "body", "return"]
    f = lesson.facts
    pre = lesson.first(phase="pre")
    assert pre["regs"]["ip"] == f["addr"] + 1
    assert pre["code"][0]["armed"] == "cc" and pre["code"][0]["mark"] == ">"
    ss = lesson.first(phase="ss")
    assert ss["regs"]["ip"] == f["slot"] and ss["slot"]["rows"][0]["mark"] == ">"
    db = lesson.first(phase="db")
    assert db["regs"]["ip"] == f["slot"] + f["length"] and "ax" in db["changed"]
    assert db["kprobes"]["status"] == "KPROBE_HIT_SS"
    assert lesson.first(phase="post")["kprobes"]["status"] == "KPROBE_HIT_SSDONE"
    assert lesson.final()["kprobes"]["status"] == "-"


def test_recording_leaves_the_guest_clock_alone(lesson_of):
    """The probed run powers off at the unprobed run's clock, with the recorder attached
    through the whole hit (the same_final fact compares clock, console and registers)."""
    ok, detail = lesson_of("kprobe").facts["same_final"]
    assert ok, detail


@pytest.mark.parametrize("name", list(DEMOS))
def test_each_debug_trap_follows_one_slot_instruction(lesson_of, name):
    """Between single-steps (kprobes not stepping), the instructions counted in the slot
    are the #DBs taken: the counters agree whatever the lesson told or left out."""
    for step in lesson_of(name).steps:
        kp = step["kprobes"]
        if kp is None or kp["status"] in ("KPROBE_HIT_SS", "KPROBE_REENTER"):
            continue
        c = step["counters"]
        assert c["slot_insns"] == c["debug"], (step["i"], step["title"], c)


def test_a_fast_forward_to_a_probe_shows_the_cpu_before_its_trap(lesson_of):
    lesson = lesson_of("kprobe")
    ff = lesson.steps[lesson.first(phase="int3")["i"] - 2]
    assert ff["event"] == "fastforward"
    assert ff["regs"]["ip"] == lesson.facts["addr"]
    assert ff["kprobes"]["status"] == "-" and ff["counters"]["int3"] == 0
    register = lesson.first(event="kprobes.register")
    assert register["code"][0]["armed"] == ""              # the arm step comes next
    assert lesson.steps[register["i"]]["code"][0]["armed"] == "cc"
