"""T8 of teaching-demos.md §4.4: the interactive stepper driven in a real terminal (tmux
send-keys), each screen checked against the frame of the step the keys lead to."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kprobes.demos.catalogue import CORE, DEMOS
from kprobes.demos.render import render_frame
from kprobes.demos.stepper import Navigator

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux not installed (make test installs it with "
                                       "apt-get when it can)")
KPEMU = str(Path(sys.executable).with_name("kpemu"))
KEYS = ["n", "n", "p", "N", "Right", "S-Right", "Left", "j", "End", "S-Left"]
NAV = {"n": "next", "Right": "next", "p": "prev", "Left": "prev", "N": "next_trap",
       "S-Right": "next_trap", "S-Left": "prev_trap", "j": "next_same_ip", "End": "last"}


class Tmux:
    def __init__(self, tmp_path, command):
        self.socket = str(tmp_path / "tmux.sock")
        self.tmux("new-session", "-d", "-s", "demo", "-x", "100", "-y", "70",
                  f"{command}; echo EXIT=$?; sleep 60")

    def tmux(self, *args):
        return subprocess.run(["tmux", "-S", self.socket, *args], check=True,
                              capture_output=True, text=True, timeout=20).stdout

    def screen(self):
        return [line.rstrip() for line in self.tmux("capture-pane", "-p", "-t", "demo")
                .splitlines()]

    def wait_for(self, lines, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen[:len(lines)] == lines:
                return screen
            time.sleep(0.05)
        return screen

    def close(self):
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


def expected(step):
    return [line.rstrip() for line in render_frame(step).splitlines()]


@pytest.mark.parametrize("name", [n for n in CORE if n in DEMOS])
def test_keys_step_through_the_frames(tmp_path, lesson_of, name):
    lesson = lesson_of(name)
    nav = Navigator(lesson)
    term = Tmux(tmp_path, f"TERM=xterm {KPEMU} demo {name} --step --no-color")
    try:
        want = expected(nav.step)
        assert term.wait_for(want)[:len(want)] == want
        for key in KEYS:
            getattr(nav, NAV[key])()
            term.tmux("send-keys", "-t", "demo", key)
            want = expected(nav.step)
            assert term.wait_for(want)[:len(want)] == want, f"after {key}"
        term.tmux("send-keys", "-t", "demo", "q")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "EXIT=0" not in term.screen():
            time.sleep(0.05)
        assert "EXIT=0" in term.screen()
    finally:
        term.close()


def test_go_to_step_and_last_write(tmp_path, lesson_of):
    lesson = lesson_of("kprobe")
    nav = Navigator(lesson)
    term = Tmux(tmp_path, f"TERM=xterm {KPEMU} demo kprobe --step --no-color")
    try:
        term.wait_for(expected(nav.step))
        term.tmux("send-keys", "-t", "demo", "g", "9", "Enter")
        nav.goto(9)
        want = expected(nav.step)
        assert term.wait_for(want)[:len(want)] == want
        # the step that last wrote ax, from the end: the #DB after `mov rax, gs:[0]` ran
        term.tmux("send-keys", "-t", "demo", "End", "w", "a", "x", "Enter")
        nav.last()
        nav.last_write("ax")
        want = expected(nav.step)
        assert nav.step["phase"] in ("db", "body")
        assert term.wait_for(want)[:len(want)] == want
    finally:
        term.close()
