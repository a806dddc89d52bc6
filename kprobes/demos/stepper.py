"""The interactive stepper (`kpemu demo NAME --step`): the narration's frames, one at a time,
redrawn in place.  Going back reads the lesson trace; nothing re-runs the guest.

Keys (teaching-demos.md §4.3):
    n, Right     next step              p, Left    previous step
    N, Shift+Right  next trap           P, Shift+Left  previous trap
    j            next time this address runs       k  previous time
    w            jump to the step that last wrote a register or stack slot (asked for)
    g            go to a step (asked for)          d  switch design (both recorded)
    Home/End     first/last step        ?          help            q  quit

Navigator is the pure part (positions in the trace, tested without a terminal); Stepper
reads keys and draws.
"""

import os
import sys
import termios
import tty

from kprobes.demos.render import console, print_step

HELP = __doc__[__doc__.index("Keys"):__doc__.index("Navigator")].rstrip()
STATUS = "n/p step  N/P trap  j/k same address  w last write  g go to  d design  ? help  q quit"

# Escape sequences of the keys that send more than one byte.
KEY_SEQUENCES = {"\x1b[C": "right", "\x1b[D": "left", "\x1b[1;2C": "shift-right",
                 "\x1b[1;2D": "shift-left", "\x1b[H": "home", "\x1b[F": "end",
                 "\x1b[1~": "home", "\x1b[4~": "end"}


class Navigator:
    """A position in a lesson's steps.  With two designs recorded, the position moves in
    the current design's steps (and the steps of neither, which both tracks share) only,
    and switch_design() goes to the same phase in the other one."""

    def __init__(self, lesson):
        self.lesson = lesson
        designs = lesson.designs
        self.designs = designs
        self.design = designs[0] if len(designs) > 1 else None
        self.pos = 0

    @property
    def track(self):
        steps = self.lesson.steps
        if self.design is None:
            return steps
        return [s for s in steps if s["design"] in (self.design, None)]

    @property
    def step(self):
        return self.track[self.pos]

    def _move(self, pos):
        if 0 <= pos < len(self.track):
            self.pos = pos
            return True
        return False

    def next(self):
        return self._move(self.pos + 1)

    def prev(self):
        return self._move(self.pos - 1)

    def first(self):
        return self._move(0)

    def last(self):
        return self._move(len(self.track) - 1)

    def goto(self, i):
        """Go to the step numbered i (as the header shows it: 1-based, in the lesson)."""
        for n, s in enumerate(self.track):
            if s["i"] == i:
                return self._move(n)
        return False

    def _search(self, pred, direction):
        track = self.track
        n = self.pos + direction
        while 0 <= n < len(track):
            if pred(track[n]):
                return self._move(n)
            n += direction
        return False

    def next_trap(self):
        return self._search(lambda s: s["trap_no"] is not None, 1)

    def prev_trap(self):
        return self._search(lambda s: s["trap_no"] is not None, -1)

    def next_same_ip(self):
        ip = self.step["where"]["ip"]
        return self._search(lambda s: s["where"]["ip"] == ip, 1)

    def prev_same_ip(self):
        ip = self.step["where"]["ip"]
        return self._search(lambda s: s["where"]["ip"] == ip, -1)

    def last_write(self, what):
        """The latest step at or before this one that changed register `what` (a name)
        or the stack slot at address `what` (an int)."""
        if isinstance(what, str):
            def wrote(s):
                return what in s["changed"]
        else:
            def wrote(s):
                return any(r["addr"] == what and r["changed"] for r in s["stack"])
        if wrote(self.step):
            return True
        return self._search(wrote, -1)

    def switch_design(self):
        """The other design, at the same occurrence of the same phase (or its nearest
        earlier phase in common)."""
        if self.design is None:
            return False
        here = self.track[:self.pos + 1]
        phase = self.step["phase"]
        nth = sum(1 for s in here if s["phase"] == phase)
        other = self.designs[1 - self.designs.index(self.design)]
        self.design = other
        seen = 0
        for n, s in enumerate(self.track):
            if s["phase"] == phase:
                seen += 1
                if seen == nth:
                    self.pos = n
                    return True
        self.pos = min(self.pos, len(self.track) - 1)
        return True


def parse_target(text):
    """What `w` asks for: a register name, or a stack address (hex)."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return text.lower()


class Stepper:
    def __init__(self, lesson, color=True, stdin=None, stdout=None):
        self.nav = Navigator(lesson)
        self.color = color
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.message = ""

    def draw(self):
        con = console(file=self.stdout, color=self.color)
        self.stdout.write("\x1b[H\x1b[2J")
        print_step(con, self.nav.step)
        design = f"  design {self.nav.design}" if self.nav.design else ""
        self.stdout.write(f"{STATUS}{design}\n{self.message}\n")
        self.stdout.flush()
        self.message = ""

    def read_key(self):
        ch = os.read(self.stdin.fileno(), 1).decode("latin-1")
        if ch != "\x1b":
            return ch
        seq = ch
        while len(seq) < 8:
            seq += os.read(self.stdin.fileno(), 1).decode("latin-1")
            if seq in KEY_SEQUENCES:
                return KEY_SEQUENCES[seq]
            if seq[-1].isalpha() or seq[-1] == "~":
                return None
        return None

    def ask(self, prompt):
        self.stdout.write(prompt)
        self.stdout.flush()
        text = ""
        while True:
            ch = os.read(self.stdin.fileno(), 1).decode("latin-1")
            if ch in ("\r", "\n"):
                return text
            if ch == "\x1b":
                return ""
            if ch in ("\x7f", "\b"):
                text = text[:-1]
                self.stdout.write("\b \b")
            elif ch.isprintable() and len(text) < 40:
                text += ch
                self.stdout.write(ch)
            self.stdout.flush()

    def handle(self, key):
        nav = self.nav
        actions = {"n": nav.next, "right": nav.next, " ": nav.next, "p": nav.prev,
                   "left": nav.prev, "N": nav.next_trap, "shift-right": nav.next_trap,
                   "P": nav.prev_trap, "shift-left": nav.prev_trap, "j": nav.next_same_ip,
                   "k": nav.prev_same_ip, "home": nav.first, "end": nav.last,
                   "d": nav.switch_design}
        if key in actions:
            if not actions[key]():
                self.message = {"d": "only one design was recorded"}.get(key, "no such step")
        elif key == "g":
            text = self.ask("go to step: ")
            if not (text.isdigit() and nav.goto(int(text))):
                self.message = f"no step {text!r}"
        elif key == "w":
            target = parse_target(self.ask("last write of (register, or stack address): "))
            if target is None or not nav.last_write(target):
                self.message = f"no step wrote {target!r}"
        elif key == "?":
            self.message = HELP
        return key != "q"

    def loop(self):
        fd = self.stdin.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            self.stdout.write("\x1b[?25l")
            self.draw()
            while self.handle(self.read_key()):
                self.draw()
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            self.stdout.write("\x1b[?25h\n")
            self.stdout.flush()
