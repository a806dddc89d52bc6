"""`kpemu boot --events-file F` with binary or UTF-16 content died with a
UnicodeDecodeError traceback.  The file is read as bytes and checked line by line: one
message naming the file, the line and the problem, exit 2."""

import pytest

from kprobes.cli import EVENTS_LINE_MAX, EventsFileError, read_events_file
from tests.cli.test_cli import kpemu

CASES = [
    ("utf16", "p:mk sys_mkdir\n".encode("utf-16"),
     "UTF-16 text (it starts with a byte-order mark); probe definitions are ASCII or UTF-8"),
    ("utf16-no-bom", "p:mk sys_mkdir\n".encode("utf-16-le"),
     "line 1 has a NUL byte at column 2: a binary file, or UTF-16 text?"),
    ("latin1", b"# caf\xe9\np:mk sys_mkdir\n", "line 1 is not UTF-8 text (byte 0xe9 at column 6)"),
    ("binary", bytes(range(0x80, 0x100)), "line 1 is not UTF-8 text (byte 0x80 at column 1)"),
    ("long-line", b"p:mk sys_mkdir " + b"x" * EVENTS_LINE_MAX + b"\n",
     f"line 1 is {EVENTS_LINE_MAX + 15} bytes long; like Linux, kpemu takes lines shorter "
     f"than {EVENTS_LINE_MAX}"),
]


@pytest.mark.parametrize("name, data, message", CASES, ids=[c[0] for c in CASES])
def test_reader_names_the_problem(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(EventsFileError) as info:
        read_events_file(path)
    assert str(info.value) == f"{path}: {message}"


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = tmp_path / "probes.txt"
    path.write_bytes("p:mk sys_mkdir\n".encode("utf-16"))
    r = kpemu("boot", "--events-file", str(path))
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == (f"kpemu: {path}: UTF-16 text (it starts with a byte-order mark); "
                        "probe definitions are ASCII or UTF-8\n")


def test_text_files_read_as_before(tmp_path):
    """What `for line in open(F)` gave: universal newlines, UTF-8, no trailing newline."""
    path = tmp_path / "probes.txt"
    path.write_bytes(b"p:a fib\r\n# \xc3\xa9t\xc3\xa9\rp:b fib\n\nr:c fib")
    assert read_events_file(path) == ["p:a fib", "# été", "p:b fib", "", "r:c fib"]
