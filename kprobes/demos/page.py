"""The lesson page: one self-contained HTML file per demo (`kpemu demo NAME --html FILE`),
and the index of them all (`kpemu demo --html-dir DIR`).

The page is made from the lesson trace alone -- the JSON Lines that `--json` writes, read
back by read_trace() -- so what a browser shows is what the terminal shows (teaching-demos.md
§4.1 rule 1).  Its CSS and plain JavaScript (assets/page.css, assets/page.js) and the trace
are inlined: nothing is fetched, and the page works from file://.

What the page's script receives (the DATA object, inlined as JSON):

    head      the trace's first line (lesson, question, semantics, claims, facts)
    steps     the steps, each stored as what differs from the step before it (the panels
              change little from step to step, and the page must stay under PAGE_BUDGET);
              the script rebuilds every full step on load
    rows      what one press of a key moves by: [{phase, cells: {design: i}}] with i a
              step number; one row a step, except with two designs recorded, where the
              rows are the two designs' steps aligned by phase (lockstep_rows)
    designs   the designs recorded, (a) first; labels: vector -> "int3 (vector 3)" ...;
              reg_order: the registers in the terminal's order (the trace sorts keys)

Each step also carries panel_kprobes, the KPROBES panel's lines as render.py draws them for
the terminal (status, probes, pools, the bucket): the page shows them as they are.

Integers beyond JavaScript's exact range (2**53: every kernel address) travel as "0x..."
strings, which the script reads with BigInt.

Must not import: unicorn, emu.machine (no renderer runs the emulator).
"""

import html
import json
from importlib import resources
from pathlib import Path

from emu.cpu import REG_NAMES
from kprobes.demos.lesson import DESIGN_LETTERS, DESIGN_NAMES, LessonError, vector_label
from kprobes.demos.render import KPROBES_WIDTH, kprobes_panel

PAGE_BUDGET = 500 * 1024         # bytes a demo's page may take (teaching-demos.md §4.3)
TRACE_MAX = 64 << 20             # a trace file larger than this is not a lesson
JS_SAFE = (1 << 53) - 1
DESIGN_ORDER = ("stack", "task")  # (a) the June 2005 original, then (b) the redesign


def read_trace(text):
    """(head, steps) from a lesson trace in JSON Lines; LessonError when it is not one.
    The steps are as the recorder made them, but for the order of keys inside them."""
    if len(text) > TRACE_MAX:
        raise LessonError(f"a lesson trace of {len(text):,} characters is too large "
                          f"(at most {TRACE_MAX:,})")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise LessonError("the lesson trace is empty")
    try:
        records = [json.loads(line) for line in lines]
    except json.JSONDecodeError as exc:
        raise LessonError(f"the lesson trace is not JSON Lines: {exc}") from None
    head, steps = records[0], records[1:]
    if not isinstance(head, dict) or "lesson" not in head:
        raise LessonError("the lesson trace's first line is not a lesson header")
    if head.get("steps") != len(steps):
        raise LessonError(f"the lesson trace announces {head.get('steps')} steps and holds "
                          f"{len(steps)}")
    for n, step in enumerate(steps, 1):
        if not isinstance(step, dict) or step.get("i") != n:
            raise LessonError(f"step {n} of the lesson trace is not step {n}")
        regs = step.get("regs")
        if isinstance(regs, dict):
            # JSON Lines sorts keys: give the registers back the machine's order, which
            # REGS lists them in.
            step["regs"] = {**{r: regs[r] for r in REG_NAMES if r in regs}, **regs}
    return head, steps


def designs_of(steps):
    """The designs recorded, in column order: (a) before (b)."""
    found = {s["design"] for s in steps if s["design"]}
    return [d for d in DESIGN_ORDER if d in found] + sorted(found - set(DESIGN_ORDER))


def align_phases(left, right):
    """The longest common subsequence of two phase lists, as pairs of indices (None where
    one side has no step): the rows of the lockstep view.  Where the sides differ, the
    left side's steps come first."""
    n, m = len(left), len(right)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for a in range(n - 1, -1, -1):
        for b in range(m - 1, -1, -1):
            if left[a] == right[b]:
                best[a][b] = best[a + 1][b + 1] + 1
            else:
                best[a][b] = max(best[a + 1][b], best[a][b + 1])
    pairs = []
    a = b = 0
    while a < n or b < m:
        if a < n and b < m and left[a] == right[b]:
            pairs.append((a, b))
            a += 1
            b += 1
        elif b == m or (a < n and best[a + 1][b] >= best[a][b + 1]):
            pairs.append((a, None))
            a += 1
        else:
            pairs.append((None, b))
            b += 1
    return pairs


def lockstep_rows(steps):
    """The rows the page steps through.  One design or none: a row a step.  Two: the
    steps of each design aligned by phase (a row holds each design's step of that phase,
    a design that lacks the phase has no cell there, drawn hatched); a step of neither
    design (a note before both runs) is a row of its own, spanning both columns."""
    designs = designs_of(steps)
    if len(designs) < 2:
        return [{"phase": s["phase"], "cells": {s["design"] or "": s["i"]}} for s in steps]
    if len(designs) > 2:
        raise LessonError(f"a lesson page shows at most two designs side by side, not "
                          f"{len(designs)}")
    left, right = designs
    rows = []
    run = {left: [], right: []}

    def flush():
        a_steps, b_steps = run[left], run[right]
        for x, y in align_phases([s["phase"] for s in a_steps], [s["phase"] for s in b_steps]):
            cells = {}
            if x is not None:
                cells[left] = a_steps[x]["i"]
            if y is not None:
                cells[right] = b_steps[y]["i"]
            phase = (a_steps[x] if x is not None else b_steps[y])["phase"]
            rows.append({"phase": phase, "cells": cells})
        run[left], run[right] = [], []

    for s in steps:
        if s["design"] in run:
            run[s["design"]].append(s)
        else:
            flush()
            rows.append({"phase": s["phase"], "cells": {"": s["i"]}})
    flush()
    return rows


def js_safe(value):
    """The trace with every integer JavaScript cannot hold exactly as a "0x..." string."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -JS_SAFE <= value <= JS_SAFE else f"{value:#x}"
    if isinstance(value, dict):
        return {k: js_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [js_safe(v) for v in value]
    return value


def _deltas(steps):
    """Each step as the keys whose values differ from the step before it."""
    out = []
    prev = {}
    for step in steps:
        out.append({k: v for k, v in step.items() if k not in prev or prev[k] != v})
        prev = step
    return out


def _asset(name):
    return resources.files("kprobes.demos").joinpath("assets", name).read_text("utf-8")


def _json_for_script(value):
    # Inside <script>, "</" would end the element and "<!--" open a comment: escape "<".
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).replace("<", "\\u003c")


def kprobes_lines(step):
    """The terminal's KPROBES panel of `step` as lines of text (without its TRAPS box)."""
    box = kprobes_panel(step, KPROBES_WIDTH).renderables[0]
    return box.renderable.plain.split("\n")


def page_data(head, steps, prose="", after=""):
    designs = designs_of(steps)
    vectors = sorted({s["vector"] for s in steps if s["vector"] is not None})
    return {
        "head": js_safe(head),
        "steps": _deltas(js_safe([{**s, "panel_kprobes": kprobes_lines(s)}
                                  for s in steps])),
        "rows": lockstep_rows(steps),
        "designs": designs,
        "design_letters": {d: DESIGN_LETTERS.get(d, d) for d in designs},
        "design_names": {d: DESIGN_NAMES.get(d, d) for d in designs},
        "labels": {str(v): vector_label(v) for v in vectors},
        "reg_order": list(REG_NAMES),
        "prose": prose,
        "after": after,
    }


def lesson_page(head, steps, prose="", after=""):
    """The page of one lesson (a str of HTML), from its trace."""
    name = head["lesson"]
    if not steps:
        raise LessonError(f"the lesson {name!r} has no steps to show")
    title = html.escape(f"kpemu demo {name}: {head['question']}")
    failed = [c for c in head.get("claims", []) if not c["ok"]]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # Nothing may leave the page: no script, style, image or font from elsewhere.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
        f"<title>{title}</title>\n<style>\n{_asset('page.css')}</style>\n</head>\n"
        f'<body data-lesson="{html.escape(name)}"'
        f' data-claims="{"failed" if failed else "hold"}">\n'
        f"{_asset('page.html')}"
        f'<script type="application/json" id="lesson-data">'
        f"{_json_for_script(page_data(head, steps, prose, after))}</script>\n"
        f"<script>\n{_asset('page.js')}</script>\n</body>\n</html>\n")


def index_page(entries):
    """The index of a directory of lesson pages.  entries: dicts with name, question,
    tier, confusions (numbers), confusion_texts {number: text}, file, steps, traps
    {label: count}, claims_ok, claims, bytes."""
    rows = []
    for e in entries:
        traps = ", ".join(f"{label} {count}" for label, count in e["traps"].items()) or "none"
        status = "all hold" if e["claims_ok"] else "FAILED"
        rows.append(
            f'<tr><td><a href="{html.escape(e["file"])}">{html.escape(e["name"])}</a></td>'
            f'<td>{html.escape(e["tier"])}</td><td>{html.escape(e["question"])}</td>'
            f'<td class="num">{e["steps"]}</td><td>{html.escape(traps)}</td>'
            f'<td>{e["claims"]} ({status})</td>'
            f'<td class="num">{e["bytes"]:,}</td></tr>')
    by_confusion = {}
    texts = {}
    for e in entries:
        for c in e["confusions"]:
            by_confusion.setdefault(c, []).append(e)
            texts[c] = e["confusion_texts"][c]
    confusions = []
    for c in sorted(by_confusion):
        links = ", ".join(f'<a href="{html.escape(e["file"])}">{html.escape(e["name"])}</a>'
                          for e in by_confusion[c])
        confusions.append(f"<li><q>{html.escape(texts[c])}</q> &mdash; {links}</li>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">\n"
        "<title>kpemu teaching demos</title>\n<style>\n"
        "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;"
        "padding:0 1em;color:#111}\n"
        "table{border-collapse:collapse;width:100%}\n"
        "td,th{border:1px solid #bbb;padding:.3em .5em;text-align:left;vertical-align:top}\n"
        "th{background:#eee}.num{text-align:right;font-variant-numeric:tabular-nums}\n"
        "</style>\n</head>\n<body>\n<h1>kpemu teaching demos</h1>\n"
        "<p>Each page is one recorded lesson: step through it with the arrow keys "
        "(<kbd>?</kbd> on a page lists the keys); every number on it comes from the "
        "recorded run.</p>\n"
        "<table>\n<tr><th>demo</th><th>tier</th><th>question</th><th>steps</th>"
        "<th>traps</th><th>claims</th><th>page bytes</th></tr>\n"
        + "\n".join(rows) +
        "\n</table>\n<h2>By learner confusion</h2>\n<ol>\n" + "\n".join(confusions) +
        "\n</ol>\n</body>\n</html>\n")


def output_dir(directory, what):
    """`directory` made (with its parents) for the renderer's files; LessonError if not."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LessonError(f"{directory}: cannot make the {what} directory: "
                          f"{exc.strerror}") from None
    return path


def write_file(path, text):
    """Write a rendered file (UTF-8); its size in bytes, or LessonError."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LessonError(f"{path}: cannot write: {exc.strerror}") from None
    return len(text.encode("utf-8"))


def trap_counts(steps):
    """{vector label: traps} over the lesson's trap steps, in vector order."""
    counts = {}
    for s in steps:
        if s["trap_no"] is not None:
            counts[s["vector"]] = counts.get(s["vector"], 0) + 1
    return {vector_label(v): counts[v] for v in sorted(counts)}
