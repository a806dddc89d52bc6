"""The terminal renderer of a lesson: a step header, the narration, and pwndbg-style panels
(CODE, SLOT, REGS, KPROBES, TRAPS, STACK), at most 100 columns so a frame fits a slide.

Every mark is a character -- `>` the current instruction, `*` what just ran or changed,
`cc` in the armed column, `^` under a repaired byte, `[TF=1 IF=0]` -- and colour only
repeats it, so --no-color loses nothing.  Rendering reads the step and nothing else.

Must not import: unicorn, emu.machine (no renderer runs the emulator).
"""

import io
import textwrap

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kprobes.demos.lesson import DESIGN_LETTERS, SHOWN_REGS, vector_label

WIDTH = 100
REGS_WIDTH = 44                      # REGS beside KPROBES (and TRAPS), a column between
KPROBES_WIDTH = WIDTH - REGS_WIDTH - 1
MARK_STYLE = {">": "bold yellow", "*": "cyan", "!": "bold red"}


def console(file=None, color=True, record=False, width=WIDTH):
    return Console(file=file if file is not None else io.StringIO(), width=width,
                   color_system="standard" if color else None, force_terminal=color,
                   no_color=not color, highlight=False, emoji=False, record=record,
                   legacy_windows=False, soft_wrap=False, markup=False,
                   force_jupyter=False, force_interactive=False, _environ={})


def header(step):
    parts = [f"step {step['i']}/{step['n']}"]
    if step["trap_no"] is not None:
        parts.append(f"trap {step['trap_no']}")
        parts.append(vector_label(step["vector"]))
    parts.append(f"clock {step['clock']:,}")
    if step["design"]:
        parts.append(f"design {DESIGN_LETTERS[step['design']]}")
    text = "── " + " · ".join(parts) + " "
    return text + "─" * max(0, WIDTH - len(text))


def _mark(char):
    return Text(char or " ", style=MARK_STYLE.get(char, ""))


def _fit(text, width):
    return text if len(text) <= width else text[:width - 1] + "…"


def code_panel(step, inner):
    rows = step["code"]
    if not rows:
        return None
    out = Text()
    for n, row in enumerate(rows):
        if n:
            out.append("\n")
        out.append_text(_mark(row["mark"]))
        out.append(" ")
        out.append(f"{row['armed']:2}", style="bold red" if row["armed"] else "")
        line = f"  {row['addr']:016x}  {row['label']:<20} {_fit(row['bytes'], 20):<20} "
        out.append(line)
        out.append(_fit(row["text"], inner - len(line) - 4))
    title = "CODE (original bytes; armed column: the byte in memory now)"
    return Panel(out, title=title, title_align="left", box=box.SQUARE, width=inner + 4)


def slot_panel(step, inner):
    slot = step["slot"]
    if slot is None:
        return None
    out = Text()
    for row in slot["rows"]:
        out.append_text(_mark(row["mark"]))
        lead = f"    {row['addr']:016x}  {row['label']:<20} "
        out.append(lead)
        for n, byte in enumerate(row["bytes"].split()):
            out.append(("" if n == 0 else " ") + byte,
                       style="bold magenta" if n in row["repaired"] else "")
        pad = 21 - len(row["bytes"])
        out.append(" " * max(1, pad))
        out.append(_fit(row["text"], inner - len(lead) - 26))
        if row["repaired"]:
            marks = "".join("^^ " if n in row["repaired"] else "   "
                            for n in range(len(row["bytes"].split())))
            out.append("\n" + " " * (len(lead) + 1) + marks.rstrip() + "  repaired")
    if slot["after"]:
        out.append("\n* ip is just past the copy: the step is done")
    # Text, not a str: rich would read a module name in brackets ([lessons]) as markup.
    return Panel(out, title=Text(f"SLOT (the copy of {slot['probe']})"), title_align="left",
                 box=box.SQUARE, width=inner + 4)


def regs_panel(step, width):
    regs = step["regs"]
    changed = set(step["changed"])
    out = Text()
    names = [n for n in regs if n in changed or n in SHOWN_REGS]
    for n, name in enumerate(names):
        if n:
            out.append("\n")
        out.append_text(_mark("*" if name in changed else ""))
        out.append(f" {name:<6} {regs[name]:016x}")
        if name == "flags":
            out.append(f" [TF={step['flags']['TF']} IF={step['flags']['IF']}]")
        elif name == "ip":
            out.append(f" {_fit(step['where']['sym'], width - 30)}")
    return Panel(out, title="REGS (* changed)", title_align="left", box=box.SQUARE,
                 width=width)


def kprobes_panel(step, width):
    kp = step["kprobes"]
    out = Text()
    if kp is None:
        out.append("not installed: a bare int3, no kprobes")
    else:
        out.append(f"status   {kp['status']}\n")
        out.append(f"current  {kp['current'] or '-'}")
        if kp["saved"]:
            out.append(f"\nsaved    {kp['saved']} (re-entry)")
        for label, n in kp["nmissed"].items():
            pool = kp["pools"].get(label)
            if pool is None:
                out.append(f"\nnmissed  {_fit(label, width - 16)} {n}")
            else:       # a kretprobe's own misses, then its entry kprobe's
                out.append(f"\nnmissed  {_fit(label, width - 40)} {pool['nmissed']} "
                           f"(its kprobe's: {n})")
        for label, pool in kp["pools"].items():
            out.append(f"\npool     {_fit(label, width - 30)} free {pool['free']} "
                       f"used {pool['used']}")
        if kp["bucket"] or kp["pools"]:
            out.append(f"\nbucket of {kp['task'] or '?'}:"
                       + ("" if kp["bucket"] else " empty"))
            for ri in kp["bucket"]:
                out.append(f"\n  {_fit(ri['rp'], 20)} ret_addr {_fit(ri['ret'], width - 36)}")
    c = step["counters"]
    traps = Text(f"int3 {c['int3']}  #DB {c['debug']}  slot insns {c['slot_insns']}")
    return Group(Panel(out, title="KPROBES", title_align="left", box=box.SQUARE, width=width),
                 Panel(traps, title="TRAPS (this lesson)", title_align="left",
                       box=box.SQUARE, width=width))


def stack_panel(step, inner):
    out = Text()
    for n, row in enumerate(step["stack"]):
        if n:
            out.append("\n")
        out.append_text(_mark(">" if row["sp"] else ""))
        out.append_text(_mark("*" if row["changed"] else ""))
        line = f" {row['addr']:016x} sp{row['off']:+#05x}  {row['value']:016x}  "
        if not row.get("swapped"):       # a swapped slot's note names both values
            line += f"{row['sym']:<22}"
        out.append(line)
        if row["note"]:
            out.append(" " + _fit(row["note"], inner - len(line) - 3), style="bold")
    return Panel(out, title="STACK (> sp, * changed)", title_align="left", box=box.SQUARE,
                 width=inner + 4)


def extra_panel(step, inner):
    extra = step["extra"]
    if not extra:
        return None
    return Panel(Text("\n".join(_fit(line, inner) for line in extra["lines"])),
                 title=extra["title"], title_align="left", box=box.SQUARE, width=inner + 4)


def frame(step):
    """The renderables of one step, in order."""
    inner = WIDTH - 4
    parts = [Text(header(step), style="bold"),
             Text("\n".join(textwrap.wrap(step["narration"], WIDTH)))]
    for panel in (code_panel(step, inner), slot_panel(step, inner)):
        if panel is not None:
            parts.append(panel)
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=REGS_WIDTH)
    grid.add_column(width=KPROBES_WIDTH)
    grid.add_row(regs_panel(step, REGS_WIDTH), kprobes_panel(step, KPROBES_WIDTH))
    parts.append(grid)
    parts.append(stack_panel(step, inner))
    panel = extra_panel(step, inner)
    if panel is not None:
        parts.append(panel)
    return parts


def print_step(con, step):
    for part in frame(step):
        con.print(part)


def claims_text(lesson):
    lines = ["── claims " + "─" * (WIDTH - 10)]
    for claim in lesson.claims:
        mark = "[ok]  " if claim["ok"] else "[FAIL]"
        lines.append(f"{mark} {claim['text']}")
        if claim["detail"]:
            lines.append(f"       {claim['detail']}")
    return "\n".join(lines)


def lesson_intro(lesson):
    lines = [f"kpemu demo {lesson.name}: {lesson.question}", lesson.header(),
             f"{len(lesson.steps)} steps"]
    return "\n".join(wrapped for line in lines for wrapped in textwrap.wrap(line, WIDTH))


def render_lesson(lesson, color=False):
    """The whole narration as text (what `kpemu demo NAME` prints)."""
    con = console(color=color)
    con.print(Text(lesson_intro(lesson), style="bold"))
    for step in lesson.steps:
        con.print()
        print_step(con, step)
    con.print()
    con.print(Text(claims_text(lesson)))
    return _rstrip(con.file.getvalue())


def render_frame(step, color=False):
    con = console(color=color)
    print_step(con, step)
    return _rstrip(con.file.getvalue())


def _rstrip(text):
    """No line ends in the padding of a shorter panel beside a longer one."""
    return "".join(line.rstrip() + "\n" for line in text.splitlines())
