"""Fuzz the events-file reader (`kpemu boot --events-file F`): the seed definitions as one
file, mutated byte-wise, re-encoded (UTF-16, Latin-1, ...), cut, given over-long lines, or
replaced by random bytes; every line read is then parsed like the CLI parses it.

Every input ends in an EventsFileError naming the file (or a clean probe-event error for a
line), or in the lines Python's own text reading gives for the same file -- a differential
check that the bounded reader reads valid files exactly as `open(F)` did."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu import Machine
from kprobes.cli import EVENTS_LINE_MAX, EventsFileError, read_events_file
from kprobes.events import ProbeCommandError, parse_command
from tests.fuzz import mutations as mu
from tests.fuzz.harness import fuzz_settings, run_input
from tests.fuzz.seeds import probe_definitions

SEED_TEXT = "# probe definitions\n" + "\n".join(probe_definitions()) + "\n"
SEED = SEED_TEXT.encode()

_byte_ops = st.lists(st.one_of(
    st.tuples(st.just("xor"), st.integers(0, len(SEED)), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(SEED))),
    st.tuples(st.just("insert"), st.integers(0, len(SEED)),
              st.sampled_from([b"\0", b"\r", b"\r\n", b"\n", b"\xff", b"\xc3", b"\xe2\x80",
                               b"\xef\xbb\xbf", b"#", b"x" * EVENTS_LINE_MAX])),
    st.tuples(st.just("delete"), st.integers(0, len(SEED)), st.integers(1, 64)),
), min_size=1, max_size=4)

FILES = st.one_of(
    _byte_ops.map(lambda ops: mu.apply(SEED, ops)),
    st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "utf-8-sig",
                     "cp1252"]).map(lambda codec: (SEED_TEXT + "# caf\u00e9\n").encode(codec)),
    st.binary(max_size=2048),
    st.text(max_size=512).map(str.encode),
    st.integers(EVENTS_LINE_MAX - 40, EVENTS_LINE_MAX + 8).map(
        lambda n: b"p:a fib " + b"x" * (n - 8) + b"\n"),
)


@pytest.fixture(scope="module")
def symbols_and_dir(tmp_path_factory):
    m = Machine()
    return m.symbols, m.layout.thread_size, tmp_path_factory.mktemp("fuzz-events")


def read_and_parse(path, symbols, thread_size):
    try:
        lines = read_events_file(path)
    except EventsFileError as exc:
        assert str(exc).startswith(f"{path}: ")
        raise
    with open(path, encoding="utf-8") as f:            # what kpemu read before it bounded
        assert lines == [ln.rstrip("\n") for ln in f]
    for line in lines:
        try:
            parse_command(line, symbols, thread_size=thread_size)
        except ProbeCommandError:
            pass                                        # a clean error for that line
    return lines


@fuzz_settings("events-file")
@given(data=FILES)
def test_events_file_reader(symbols_and_dir, data):
    symbols, thread_size, workdir = symbols_and_dir
    path = workdir / "probes.txt"
    path.write_bytes(data)
    run_input("events-file", lambda: read_and_parse(path, symbols, thread_size))
