"""Fuzz the probe-definition parser, alone (`kprobes.events.parse_command` against the
toykernel's kallsyms) and for real (`KprobeEvents.command` on a booted machine, which
registers the probes): the definitions of tests/events mutated word by word with pieces of
the kprobe_events language, and character by character.

Every input ends in a clean probe-event error (ProbeSyntaxError with its error_log entry,
or ProbeCommandError) or in a correct result: a definition whose read-back line parses to
the same read-back (as Linux's kprobe_events can be written back from what it shows), an
event listed once created, and after `> kprobe_events` no probe left and the kernel text
byte for byte the image's."""

import pytest
from hypothesis import given

from emu import Machine
from kprobes import Kprobes
from kprobes.events import KprobeEvents, ProbeDefinition, TraceKprobe, parse_command
from tests.fuzz import strategies as fs
from tests.fuzz.harness import fuzz_settings, run_input
from tests.fuzz.seeds import probe_definitions

DEFINITIONS = fs.definition_text(probe_definitions())


@pytest.fixture(scope="module")
def symbols():
    m = Machine()
    return m.symbols, m.layout.thread_size


@pytest.fixture(scope="module")
def booted():
    m = Machine()
    k = Kprobes(m)
    m.boot()
    text = [(start, m.read(start, end - start)) for start, end in m.image.text_ranges]
    return m, k, KprobeEvents(k), k.list(), text


def parse_and_read_back(line, symbols, thread_size):
    defn = parse_command(line, symbols, thread_size=thread_size)
    if isinstance(defn, ProbeDefinition):
        again = parse_command(defn.canonical(), symbols, thread_size=thread_size)
        assert again.canonical() == defn.canonical()
    return defn


@fuzz_settings("probe-definition")
@given(line=DEFINITIONS)
def test_parse_command(symbols, line):
    run_input("probe-definition", lambda: parse_and_read_back(line, *symbols))


def command_then_clear(events, line):
    try:
        result = events.command(line)
        if isinstance(result, TraceKprobe):
            assert events.listing() == result.defn.canonical() + "\n"
        return result
    finally:
        events.clear()


@fuzz_settings("kprobe_events command")
@given(line=DEFINITIONS)
def test_kprobe_events_command(booted, line):
    m, k, events, empty_list, text = booted
    run_input("kprobe_events command", lambda: command_then_clear(events, line))
    assert k.list() == empty_list
    assert all(m.read(start, len(code)) == code for start, code in text)
