"""A trace line read back into its columns and arguments (parse_trace_line): kpemu's own
lines, Linux's with the "counter" clock, strings with spaces and `x=` inside, faults,
arrays, return probes, and what is not a probe event's line."""

import pytest

from kprobes.events.trace_output import format_trace_line, parse_trace_line, trace_header


def test_kpemu_line_round_trips():
    line = format_trace_line("bash", 1234, 0, "d....", 123_456_789_012, "myprobe",
                             "do_sys_open+0x0/0x2a0", ' dfd=0x3 path="/tmp/a b" c={1,2}')
    t = parse_trace_line(line)
    assert (t.comm, t.pid, t.cpu, t.flags, t.timestamp, t.event, t.ip_text) == \
        ("bash", 1234, 0, "d....", "123.456789", "myprobe", "do_sys_open+0x0/0x2a0")
    assert t.args == (("dfd", "0x3"), ("path", "/tmp/a b"), ("c", "{1,2}"))


def test_linux_counter_clock_return_probe_line():
    t = parse_trace_line("        forkexec-15      [000] .....    42: clone: "
                         "(__do_sys_fork+0x2b/0x50 <- kernel_clone) ret=16\n")
    assert (t.comm, t.pid, t.timestamp, t.event) == ("forkexec", 15, "42", "clone")
    assert t.ip_text == "__do_sys_fork+0x2b/0x50 <- kernel_clone"
    assert t.args == (("ret", "16"),)


def test_comm_with_dash_and_space_and_a_line_without_args():
    t = parse_trace_line(format_trace_line("kworker/0:1-ev x", 7, 2, ".N...", 0, "e", "f"))
    assert (t.comm, t.pid, t.cpu, t.flags, t.args) == ("kworker/0:1-ev x", 7, 2, ".N...", ())


def test_string_holding_a_name_equals_and_a_fault():
    t = parse_trace_line(format_trace_line("init", 1, 0, ".....", 0, "op", "f+0x0/0x1",
                                           ' path="a x=b" name=(fault) n=-100'))
    assert t.args == (("path", "a x=b"), ("name", "(fault)"), ("n", "-100"))


@pytest.mark.parametrize("line", trace_header(3) + [
    "", "init: workload done", "            init-1       [000] .....    1: op: no paren",
    '            init-1       [000] .....    1: op: (f+0x0/0x1)junk',
])
def test_what_is_not_a_probe_events_line(line):
    assert parse_trace_line(line) is None
