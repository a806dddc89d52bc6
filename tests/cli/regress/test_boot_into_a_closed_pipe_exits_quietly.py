"""`kpemu boot | head` ended in a BrokenPipeError traceback (raised from the console echo
inside a Unicorn hook, or from the trace printed at the end).  Like a Unix tool killed by
SIGPIPE, kpemu now stops at once with status 141 and prints nothing on stderr."""

import subprocess
import sys

import pytest

from kprobes.cli import EXIT_BROKEN_PIPE


@pytest.mark.parametrize("args", [["boot"], ["boot", "-e", "p:f fib"]],
                         ids=["console", "trace"])
def test_reader_closing_the_pipe_stops_kpemu_quietly(args):
    proc = subprocess.Popen([sys.executable, "-m", "kprobes", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE == 141
    assert first.startswith(b"toykernel: ")
    assert stderr == b""
