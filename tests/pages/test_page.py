"""The lesson page, without a browser: its size, that it names nothing outside itself, that
its data is exactly the trace, the lockstep rows of two designs, and `kpemu demo --html` /
`--html-dir`.  (tests/pages/test_browser.py drives the pages in chromium.)"""

import json
import re

import pytest

from kprobes.demos.catalogue import DEMOS
from kprobes.demos.lesson import LessonError
from kprobes.demos.page import (PAGE_BUDGET, align_phases, designs_of, js_safe, lesson_page,
                                kprobes_lines, lockstep_rows, read_trace)
from tests.cli.test_cli import kpemu
from tests.pages import synthetic
from tests.pages.conftest import DEMO_NAMES, LESSONS

DATA = re.compile(r'<script type="application/json" id="lesson-data">(.*?)</script>', re.S)


def page_of(t):
    return lesson_page(t.head, t.steps, t.prose, t.after)


def data_of(page):
    return json.loads(DATA.search(page).group(1))


def numbers(value):
    """Every integer (not a bool) in a JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


def test_js_safe_turns_exactly_the_integers_javascript_rounds_into_hex():
    value = {"a": 2 ** 53 - 1, "b": 2 ** 53, "c": [-(2 ** 53)], "d": "0x10", "e": True,
             "f": None, "g": 0xffffffff81000000}
    assert js_safe(value) == {"a": 2 ** 53 - 1, "b": "0x20000000000000",
                               "c": ["-0x20000000000000"], "d": "0x10", "e": True,
                               "f": None, "g": "0xffffffff81000000"}


@pytest.mark.parametrize("name", LESSONS)
def test_page_is_within_the_size_budget(trace, name):
    size = len(page_of(trace(name)).encode("utf-8"))
    assert 0 < size <= PAGE_BUDGET, f"{name}: {size:,} bytes"


@pytest.mark.parametrize("name", LESSONS)
def test_page_names_nothing_outside_itself(trace, name):
    page = page_of(trace(name))
    # No element that loads anything, no URL, no CSS import; the CSP forbids the rest.
    for pattern in (r"<link\b", r"<img\b", r"<iframe\b", r"\bsrc\s*=", r"@import",
                    r"url\(", r"https?:", r"//[a-z0-9.-]+\.[a-z]{2,}/"):
        assert not re.search(pattern, page, re.I), (name, pattern)
    assert "default-src 'none'" in page


@pytest.mark.parametrize("name", LESSONS)
def test_page_data_is_the_trace(trace, name):
    t = trace(name)
    data = data_of(page_of(t))
    assert data["head"] == js_safe(t.head)
    rebuilt = []
    prev = {}
    for delta in data["steps"]:
        prev = {**prev, **delta}
        rebuilt.append(prev)
    assert [s.pop("panel_kprobes") for s in rebuilt] == [kprobes_lines(s) for s in t.steps]
    assert rebuilt == js_safe(t.steps)
    # Every integer left as a number is one JavaScript holds exactly.
    assert all(abs(n) < 2 ** 53 for n in numbers(data))
    # Each step is in exactly one row, in lesson order within its design.
    cells = [i for row in data["rows"] for i in row["cells"].values()]
    assert sorted(cells) == [s["i"] for s in t.steps]
    for design in designs_of(t.steps) or [""]:
        mine = [row["cells"][design] for row in data["rows"] if design in row["cells"]]
        assert mine == sorted(mine)


@pytest.mark.parametrize("name", LESSONS)
def test_page_is_the_same_bytes_every_time(trace, name):
    t = trace(name)
    first = page_of(t)
    again = read_trace(t.jsonl)
    assert lesson_page(*again, t.prose, t.after) == first


def test_lockstep_rows_of_two_designs_align_by_phase(trace):
    t = trace(synthetic.NAME)
    rows = lockstep_rows(t.steps)
    by_design = {d: {s["phase"]: s["i"] for s in t.steps if s["design"] == d}
                 for d in ("stack", "task")}
    expected = [{"phase": "intro", "cells": {"": 1}}]
    for phase in synthetic.PHASES_A:
        cells = {"stack": by_design["stack"][phase]}
        if phase in synthetic.PHASES_B:
            cells["task"] = by_design["task"][phase]
        expected.append({"phase": phase, "cells": cells})
    assert rows == expected
    assert [r["phase"] for r in rows if "task" not in r["cells"] and "" not in r["cells"]] \
        == ["R.db", "R.post"]
    assert designs_of(t.steps) == ["stack", "task"]


@pytest.mark.parametrize("left, right, pairs", [
    ("abc", "abc", [(0, 0), (1, 1), (2, 2)]),
    ("abxyc", "abc", [(0, 0), (1, 1), (2, None), (3, None), (4, 2)]),
    ("ac", "abc", [(0, 0), (None, 1), (1, 2)]),
    ("axc", "ayc", [(0, 0), (1, None), (None, 1), (2, 2)]),
    ("", "ab", [(None, 0), (None, 1)]),
    ("aab", "ab", [(0, 0), (1, None), (2, 1)]),
])
def test_align_pairs_the_longest_common_phases(left, right, pairs):
    assert align_phases(list(left), list(right)) == pairs


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_lockstep_rows_hold_every_step_once_in_order(trace, name):
    """One design: a row a step.  Two: each step in one cell of its design's column (or
    across both, with no design), each column in its steps' order."""
    t = trace(name)
    rows = lockstep_rows(t.steps)
    if len(designs_of(t.steps)) <= 1:
        assert [list(r["cells"].values()) for r in rows] == [[s["i"]] for s in t.steps]
        return
    cells = [i for r in rows for i in r["cells"].values()]
    assert sorted(cells) == [s["i"] for s in t.steps]
    for design in designs_of(t.steps) + [""]:
        column = [r["cells"][design] for r in rows if design in r["cells"]]
        assert column == [s["i"] for s in t.steps if (s["design"] or "") == design]


@pytest.mark.parametrize("text, message", [
    ("", "the lesson trace is empty"),
    ("{not json}\n", "is not JSON Lines"),
    ('{"steps": 0}\n', "first line is not a lesson header"),
    ('{"lesson": "x", "steps": 2}\n{"i": 1}\n', "announces 2 steps and holds 1"),
    ('{"lesson": "x", "steps": 1}\n{"i": 2}\n', "step 1 of the lesson trace is not step 1"),
])
def test_a_trace_that_is_not_one_is_refused(text, message):
    with pytest.raises(LessonError, match=re.escape(message)):
        read_trace(text)


def test_html_writes_the_page_of_the_trace_json_writes(trace, tmp_path):
    t = trace("kprobe")
    path = tmp_path / "kprobe.html"
    r = kpemu("demo", "kprobe", "--html", path)
    assert r.returncode == 0, r.stderr
    written = path.read_text("utf-8")
    assert written == page_of(t)
    assert r.stdout == (f"wrote {path}: {len(t.steps)} steps, "
                        f"{len(written.encode()):,} bytes\n")
    assert r.stderr == ""


@pytest.mark.slow
def test_html_dir_writes_every_demo_and_an_index(trace, tmp_path):
    r = kpemu("demo", "--html-dir", tmp_path / "pages")
    assert r.returncode == 0, r.stderr
    pages = tmp_path / "pages"
    assert sorted(p.name for p in pages.iterdir()) == \
        sorted([f"{n}.html" for n in DEMOS] + ["index.html"])
    index = (pages / "index.html").read_text("utf-8")
    for name, demo in DEMOS.items():
        size = (pages / f"{name}.html").stat().st_size
        assert (pages / f"{name}.html").read_text("utf-8") == page_of(trace(name))
        assert f'<a href="{name}.html">{name}</a>' in index
        assert f'<td class="num">{size:,}</td>' in index
        assert f"wrote {pages / (name + '.html')}: {len(trace(name).steps)} steps, " \
            f"{size:,} bytes\n" in r.stdout
    assert r.stdout.endswith(f"wrote {pages / 'index.html'}: {len(DEMOS)} "
                             f"demo{'s' if len(DEMOS) != 1 else ''}\n")


@pytest.mark.parametrize("args, message", [
    (["kprobe", "--html-dir", "DIR"], "--html-dir writes every demo: give it no NAME"),
    (["--html", "x.html"], "--step, --json, --html and --svg need a demo NAME"),
    (["--svg", "DIR"], "--step, --json, --html and --svg need a demo NAME"),
    (["nosuchdemo", "--html", "x.html"], "no demo named 'nosuchdemo'"),
])
def test_page_options_refuse_what_they_cannot_do(args, message, tmp_path):
    r = kpemu("demo", *[str(tmp_path / a) if a in ("DIR", "x.html") else a for a in args])
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("kpemu: ") and message in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_page_path_is_one_clear_message(tmp_path):
    path = tmp_path / "missing" / "kprobe.html"
    r = kpemu("demo", "kprobe", "--html", path)
    assert r.returncode == 2
    assert r.stderr == f"kpemu: {path}: cannot write: No such file or directory\n"


def test_a_page_says_when_a_claim_does_not_hold(trace):
    t = trace("kprobe")
    claims = [{"text": "it holds", "ok": True, "detail": "yes"},
              {"text": "it does not", "ok": False, "detail": "no"}]
    page = lesson_page({**t.head, "claims": claims}, t.steps)
    assert '<body data-lesson="kprobe" data-claims="failed">' in page
    assert data_of(page)["head"]["claims"] == claims
    assert '<body data-lesson="kprobe" data-claims="hold">' in page_of(t)
