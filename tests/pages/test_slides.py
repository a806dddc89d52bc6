"""The slides (`kpemu demo NAME --svg DIR`): valid SVG, the terminal frame's text and marks
exactly, one width for all, the key frames of the storyboard, and the same bytes on every
run -- of the page too, in another process with another hash seed."""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kprobes.demos.lesson import LessonError
from kprobes.demos.page import lesson_page
from kprobes.demos.render import render_frame
from kprobes.demos.slides import (KEY_FRAMES, key_frames, slide_names, step_title,
                                  storyboard_svg, write_slides)
from tests.cli.test_cli import kpemu
from tests.pages import synthetic
from tests.pages.conftest import LESSONS

SVG = "{http://www.w3.org/2000/svg}"


def svg_lines(svg):
    """(title, lines): the window title and the terminal's text, line by line, as the
    SVG places it (each text element at its column)."""
    root = ET.fromstring(svg)
    title = None
    rows = {}
    cell = None
    for el in root.iter(SVG + "text"):
        text = (el.text or "").replace("\xa0", " ")
        clip = el.get("clip-path")
        if clip is None:
            title = text
            continue
        if cell is None:
            cell = float(el.get("textLength")) / len(text)
        line = int(re.search(r"line-(\d+)\)", clip).group(1))
        rows.setdefault(line, []).append((round(float(el.get("x")) / cell), text))
    lines = []
    for n in range(max(rows) + 1 if rows else 0):
        out = ""
        for col, text in sorted(rows.get(n, [])):
            out = out.ljust(col) + text
        lines.append(out.rstrip())
    return title, lines


def width_of(svg):
    return ET.fromstring(svg).get("viewBox").split()[2]


@pytest.fixture(scope="module")
def slides(trace, tmp_path_factory):
    """slides(name) -> {file name: SVG text}, written by write_slides (once a module)."""
    made = {}

    def get(name):
        if name not in made:
            t = trace(name)
            out = tmp_path_factory.mktemp(f"svg-{name}")
            paths = write_slides(name, t.steps, out)
            made[name] = {p.name: p.read_text("utf-8") for p in paths}
        return made[name]

    return get


@pytest.mark.parametrize("name", LESSONS)
def test_every_step_is_an_svg_of_its_terminal_frame(trace, slides, name):
    t = trace(name)
    files = slides(name)
    assert list(files) == slide_names(name, t.steps) + [f"{name}-storyboard.svg"]
    for file, step in zip(files, t.steps):
        title, lines = svg_lines(files[file])
        assert title == step_title(name, step)
        assert step["title"] in title
        # The frame's text with every mark (> * cc ^^ TF=1 and the swap note) in place.
        assert lines == [line.rstrip() for line in
                         render_frame(step, color=False).rstrip("\n").split("\n")], file
        # Nothing to fetch: no web font, no url() but the SVG's own #ids.
        assert "@font-face" not in files[file]
        assert re.findall(r"url\((?!#)", files[file]) == []


@pytest.mark.parametrize("name", LESSONS)
def test_every_slide_has_the_terminal_width(slides, name):
    widths = {width_of(svg) for svg in slides(name).values()}
    assert len(widths) == 1
    assert widths == {width_of(slides("kprobe")["kprobe-001.svg"])}


@pytest.mark.parametrize("name", LESSONS)
def test_the_storyboard_shows_the_key_frames(trace, slides, name):
    t = trace(name)
    keys = key_frames(t.steps)
    assert 1 <= len(keys) <= KEY_FRAMES
    expected = [s for s in t.steps if s["trap_no"] is not None or s["event"] == "kprobes.swap"]
    assert keys == (expected[:KEY_FRAMES] if expected else [t.steps[0], t.steps[-1]])
    title, lines = svg_lines(slides(name)[f"{name}-storyboard.svg"])
    assert title == f"kpemu demo {name} · key frames: steps " + \
        ", ".join(str(s["i"]) for s in keys)
    heads = [line for line in lines if line.startswith("key frame ")]
    assert heads == [f"key frame {n}/{len(keys)}: step {s['i']}/{s['n']}, {s['title']}"
                     for n, s in enumerate(keys, 1)]
    for s in keys:
        frame = [line.rstrip() for line in render_frame(s, color=False).rstrip().split("\n")]
        at = lines.index(heads[keys.index(s)]) + 1
        assert lines[at:at + len(frame)] == frame


def test_the_kprobe_storyboard_is_its_two_traps(trace):
    steps = trace("kprobe").steps
    assert [(s["vector"], s["trap_no"]) for s in key_frames(steps)] == [(3, 1), (1, 2)]


def test_a_kretprobe_storyboard_is_the_traps_and_the_swap(trace):
    """The four frames of a return-address swap and its restore: int3, swap, #DB, and the
    trampoline's int3 -- a swap step among the traps is a key frame."""
    steps = [dict(s) for s in trace(synthetic.NAME).steps if s["design"] == "task"]
    steps[1] = {**steps[1], "event": "kprobes.swap"}     # E.pre/swap: the swap itself
    assert [s["phase"] for s in key_frames(steps)] == ["E.int3", "E.pre/swap", "E.db",
                                                       "R.int3"]


@pytest.mark.parametrize("name", LESSONS)
def test_slides_are_the_same_bytes_every_time(trace, slides, name):
    t = trace(name)
    assert storyboard_svg(name, t.steps) == slides(name)[f"{name}-storyboard.svg"]


def test_svg_writes_every_step_and_the_storyboard(trace, tmp_path):
    t = trace("kprobe")
    r = kpemu("demo", "kprobe", "--svg", tmp_path / "slides")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"wrote {len(t.steps) + 1} SVGs into {tmp_path / 'slides'}: "
                        f"{len(t.steps)} steps and kprobe-storyboard.svg\n")
    written = sorted(p.name for p in (tmp_path / "slides").iterdir())
    assert written == sorted(slide_names("kprobe", t.steps) + ["kprobe-storyboard.svg"])


RENDER_ELSEWHERE = """
import sys
from pathlib import Path
from kprobes.demos.lesson import LessonError
from kprobes.demos.page import lesson_page, read_trace
from kprobes.demos.slides import slide_names, step_svg, storyboard_svg
out = Path(sys.argv[1])
for trace in sys.argv[2:]:
    head, steps = read_trace(Path(trace).read_text("utf-8"))
    name = head["lesson"]
    (out / (name + ".html")).write_text(lesson_page(head, steps), "utf-8")
    (out / (name + "-storyboard.svg")).write_text(storyboard_svg(name, steps), "utf-8")
    for file, step in list(zip(slide_names(name, steps), steps))[:SAMPLE]:
        (out / file).write_text(step_svg(name, step), "utf-8")
"""
SAMPLE = 3          # step SVGs a lesson renders there (the storyboard has the key frames)


def test_pages_and_slides_are_the_same_bytes_in_another_process(trace, slides, tmp_path):
    """Rendering depends on nothing but the trace: another interpreter, with another hash
    seed (set and dict orders), writes the same bytes."""
    traces = []
    for name in LESSONS:
        path = tmp_path / f"{name}.jsonl"
        path.write_text(trace(name).jsonl, "utf-8")
        traces.append(str(path))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", RENDER_ELSEWHERE.replace("SAMPLE", str(SAMPLE)),
                    str(out), *traces], check=True, env=env, timeout=300,
                   cwd=Path(__file__).resolve().parents[2])
    for name in LESSONS:
        t = trace(name)
        assert (out / f"{name}.html").read_text("utf-8") == lesson_page(t.head, t.steps)
        mine = slides(name)
        for file in slide_names(name, t.steps)[:SAMPLE] + [f"{name}-storyboard.svg"]:
            assert (out / file).read_text("utf-8") == mine[file], file


def test_no_color_slides_have_the_same_text_in_one_ink(slides, tmp_path):
    r = kpemu("demo", "kprobe", "--svg", tmp_path, "--no-color")
    assert r.returncode == 0, r.stderr
    for file, svg in slides("kprobe").items():
        plain = (tmp_path / file).read_text("utf-8")
        assert svg_lines(plain) == svg_lines(svg)
        fills = set(re.findall(r"\{ fill: (#[0-9a-f]{6})", plain))
        # Black ink, and white where a line is reversed (the storyboard's frame names).
        assert fills <= {"#000000", "#ffffff"} and "#000000" in fills
        assert len(set(re.findall(r"\{ fill: (#[0-9a-f]{6})", svg)) - fills) > 0


def test_a_lesson_without_steps_has_no_page_and_no_slides(tmp_path):
    head = {"lesson": "empty", "question": "?", "steps": 0}
    with pytest.raises(LessonError, match="the lesson 'empty' has no steps to show"):
        lesson_page(head, [])
    with pytest.raises(LessonError, match="the lesson 'empty' has no steps to draw"):
        write_slides("empty", [], tmp_path / "slides")
    assert not (tmp_path / "slides").exists()
