"""T3, T4, T5 of teaching-demos.md §4.4: each demo's narration is its committed transcript
byte for byte, its lesson trace is the committed golden JSON Lines, and ten recordings give
the same bytes.  A lesson that changes on purpose is re-generated with `make demos`, and
the change shows in review."""

import pytest

from kprobes.cli import main
from kprobes.demos import catalogue, command
from kprobes.demos.catalogue import DEMOS
from kprobes.demos.lesson import Claim, Lesson
from kprobes.demos.render import render_lesson
from kprobes.demos.transcript import golden_path, transcript, transcript_path

RUNS = 10


def kpemu(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("name", list(DEMOS))
def test_narration_is_the_committed_transcript(capsys, name):
    status, out, err = kpemu(capsys, "demo", name, "--no-color")
    assert (status, err) == (0, "")
    assert transcript(DEMOS[name], out) == transcript_path(name).read_text(), \
        f"demos/{name}_example.txt differs from the narration: run `make demos` if meant"


@pytest.mark.parametrize("name", list(DEMOS))
def test_lesson_trace_is_the_golden_one(capsys, name):
    status, out, err = kpemu(capsys, "demo", name, "--json")
    assert (status, err) == (0, "")
    assert out == golden_path(name).read_text(), \
        f"the lesson trace of {name} differs from the golden one: `make demos` if meant"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DEMOS))
def test_ten_recordings_give_the_same_bytes(name):
    """Ten recordings, ten identical lesson traces.  The narration is rendered from the
    trace alone, so it is compared for the first and the last of them (and with the
    committed transcript by the test above)."""
    traces = []
    for _ in range(RUNS):
        traces.append(catalogue.run(name))
    assert len({lesson.to_json_lines() for lesson in traces}) == 1
    assert render_lesson(traces[0]) == render_lesson(traces[-1])


def test_a_claim_that_does_not_hold_fails_the_demo_loudly(capsys, monkeypatch, lesson_of):
    real = lesson_of("kprobe")
    demo = DEMOS["kprobe"]
    liar = catalogue.Demo if hasattr(catalogue, "Demo") else type(demo)
    fake = liar(**{**demo.__dict__, "claims": demo.claims + [
        Claim("the probe was hit twice", lambda l: (l.final()["counters"]["int3"] == 2,
                                                    f"int3 {l.final()['counters']['int3']}"))]})
    monkeypatch.setattr(command, "run", lambda name: Lesson(fake, [dict(s) for s in
                                                                     real.steps], real.facts))
    status, out, err = kpemu(capsys, "demo", "kprobe", "--no-color")
    assert status == 1
    assert "[FAIL] the probe was hit twice" in out
    assert err == "kpemu: demo kprobe: claim does not hold: the probe was hit twice (int3 1)\n"


@pytest.mark.parametrize("name", list(DEMOS))
def test_transcripts_fit_in_100_columns(name):
    lines = transcript_path(name).read_text(encoding="utf-8").splitlines()
    assert max(len(line) for line in lines) <= 100
