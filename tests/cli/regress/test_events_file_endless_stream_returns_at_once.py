"""`--events-file /dev/zero` never returned: the file was read whole.  At most
EVENTS_FILE_MAX bytes are read now, so an endless stream fails at once with the limit in
the message, while a pipe that ends (`--events-file <(...)`) still works."""

import os
import subprocess
import sys

import pytest

from kprobes.cli import EVENTS_FILE_MAX, EventsFileError, read_events_file


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
def test_dev_zero_is_refused_with_the_limit():
    r = subprocess.run([sys.executable, "-m", "kprobes", "boot", "--events-file", "/dev/zero"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr == "kpemu: /dev/zero: more than the 1 MiB kpemu reads from an events file\n"


def test_a_file_over_the_limit_is_refused(tmp_path):
    path = tmp_path / "many.txt"
    path.write_bytes(b"p:a fib\n" * (EVENTS_FILE_MAX // 8 + 1))
    with pytest.raises(EventsFileError, match="more than the 1 MiB"):
        read_events_file(path)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="no /dev/fd on this system")
def test_a_pipe_that_ends_is_read():
    """What `--events-file <(generate)` hands kpemu: /dev/fd/N, a pipe."""
    r, w = os.pipe()
    try:
        os.write(w, b"p:a fib\nr:b fib\n")
        os.close(w)
        assert read_events_file(f"/dev/fd/{r}") == ["p:a fib", "r:b fib"]
    finally:
        os.close(r)


def test_a_fifo_nobody_writes_to_reads_as_empty(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_events_file(fifo) == []


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(EventsFileError, match="is a directory, not a file of probe "
                                              "definitions"):
        read_events_file(tmp_path)
