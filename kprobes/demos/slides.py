"""Slides of a lesson (`kpemu demo NAME --svg DIR`): one SVG a step, and a storyboard SVG of
the key frames, all drawn by the terminal renderer's frame at its 100 columns, so every
slide has the same width and the same text as the narration.

rich's SVG export is given a fixed id for each picture (the lesson and the step), so the
same trace gives the same bytes; its font is the terminal's monospace, with no web font to
fetch (rich's own template names one on a CDN: the template used here leaves it out).

Key frames (key_frames): the steps where the mechanism acts on the guest -- every trap
taken (the int3, the #DB after the step in the slot, the trampoline's int3, a guest
fault) and every return address swapped on the stack -- in lesson order, at most
KEY_FRAMES of them.  For a kretprobe that is the entry int3, the swap to the trampoline,
the #DB, and the return's int3 where the real address comes back.  A lesson with none
(no trap at all) gets its first and last steps.

Must not import: unicorn, emu.machine (no renderer runs the emulator).
"""

import re

from rich._export_format import CONSOLE_SVG_FORMAT
from rich.terminal_theme import TerminalTheme
from rich.text import Text

from kprobes.demos.lesson import LessonError
from kprobes.demos.page import output_dir, write_file
from kprobes.demos.render import console, print_step

KEY_FRAMES = 8
KEY_EVENTS = ("kprobes.swap",)
# rich's template without its @font-face rules, which load Fira Code from the network.
SVG_FORMAT = re.sub(r"\n[ \t]*@font-face \{\{.*?\}\}", "", CONSOLE_SVG_FORMAT, flags=re.S)


# --no-color slides: black on white, every colour of the frame drawn in the one ink (the
# marks are characters; bold stays).
INK = (0, 0, 0)
MONO = TerminalTheme((255, 255, 255), INK, [INK] * 8, [INK] * 8)


def _svg(con, title, uid, color):
    return con.export_svg(title=title, code_format=SVG_FORMAT, unique_id=uid,
                          theme=None if color else MONO)


def _uid(name, what):
    # An id usable in CSS class names and url(#...) references.
    return "kpemu-" + re.sub(r"[^A-Za-z0-9-]", "-", f"{name}-{what}")


def step_title(name, step):
    return f"kpemu demo {name} · step {step['i']}/{step['n']}: {step['title']}"


def step_svg(name, step, color=True):
    """The SVG of one step: the terminal frame, the step's title in the window bar
    (color=False: in one ink)."""
    con = console(color=True, record=True)
    print_step(con, step)
    return _svg(con, step_title(name, step), _uid(name, f"s{step['i']}"), color)


def key_frames(steps):
    """The steps the storyboard shows (see the module docstring)."""
    keys = [s for s in steps if s["trap_no"] is not None or s["event"] in KEY_EVENTS]
    if not keys:
        keys = steps[:1] + steps[-1:] if len(steps) > 1 else list(steps)
    return keys[:KEY_FRAMES]


def storyboard_svg(name, steps, color=True):
    """One SVG of the key frames one under the other, each under a line naming it."""
    keys = key_frames(steps)
    con = console(color=True, record=True)
    for n, step in enumerate(keys, 1):
        if n > 1:
            con.print()
        con.print(Text(f"key frame {n}/{len(keys)}: step {step['i']}/{step['n']}, "
                       f"{step['title']}", style="bold reverse"))
        print_step(con, step)
    numbers = ", ".join(str(s["i"]) for s in keys)
    return _svg(con, f"kpemu demo {name} · key frames: steps {numbers}",
                _uid(name, "storyboard"), color)


def slide_names(name, steps):
    digits = max(3, len(str(len(steps))))
    return [f"{name}-{s['i']:0{digits}d}.svg" for s in steps]


def write_slides(name, steps, directory, color=True):
    """Write every step's SVG and NAME-storyboard.svg into `directory` (made if missing);
    returns the paths written."""
    if not steps:
        raise LessonError(f"the lesson {name!r} has no steps to draw")
    out = output_dir(directory, "slides")
    written = []
    pictures = [(file, step_svg(name, s, color))
                for file, s in zip(slide_names(name, steps), steps)]
    pictures.append((f"{name}-storyboard.svg", storyboard_svg(name, steps, color)))
    for file, svg in pictures:
        write_file(out / file, svg)
        written.append(out / file)
    return written

