"""The readers of what the guest prints about itself (tests/linux/guest.py), on made-up
consoles: a KTAP report with a failing and a skipped case is read as such, a broken one is
refused with the reason, and init's trace lines are split from the rest."""

import pytest

from tests.linux.guest import Case, events_of, guest_trace, parse_ktap

KTAP = """\
Freeing SMP alternatives memory: 32K\r
KTAP version 1\r
1..2\r
    KTAP version 1\r
    # Subtest: alpha\r
    1..2\r
    ok 1 first\r
    not ok 2 second\r
# alpha: pass:1 fail:1 skip:0 total:2\r
not ok 1 alpha\r
    KTAP version 1\r
    # Subtest: beta\r
    1..1\r
    ok 1 only # SKIP not on this machine\r
# beta: pass:0 fail:0 skip:1 total:1\r
# Totals: pass:1 fail:1 skip:1 total:3\r
ok 2 beta\r
Run /init as init process\r
"""


def test_a_report_with_a_failure_and_a_skip():
    report = parse_ktap(KTAP.encode())
    alpha, beta = report.suites
    assert (alpha.number, alpha.name, alpha.ok) == (1, "alpha", False)
    assert alpha.cases == (Case(1, "first", True, ""), Case(2, "second", False, ""))
    assert alpha.counts == {"pass": 1, "fail": 1, "skip": 0, "total": 2}
    assert (beta.number, beta.name, beta.ok) == (2, "beta", True)
    assert beta.cases == (Case(1, "only", True, "SKIP not on this machine"),)
    assert report.totals == {"pass": 1, "fail": 1, "skip": 1, "total": 3}


@pytest.mark.parametrize("broken, message", [
    ("Run /init as init process\n", "no report in the console"),
    (KTAP.replace("1..2\r", "2 suites\r"), "no plan after the version line"),
    (KTAP.replace("    not ok 2 second", "    maybe 2 second"), "expected case 2 of alpha"),
    (KTAP.replace("    ok 1 first", "    ok 3 first"), "case 3 of alpha where 1 was due"),
    (KTAP.replace("# alpha: pass", "# gamma: pass"), "no counts line for alpha"),
    (KTAP.replace("# Totals: pass:1 fail:1 skip:1 total:3\r\n", ""), "no '# Totals:' line"),
    (KTAP.replace("ok 2 beta", "ok 2 gamma"), "result 2 gamma where 2 beta was due"),
    (KTAP[:KTAP.index("    KTAP version 1\r\n    # Subtest: beta")],
     "suite 2 has no version line"),
    (KTAP[:KTAP.index("\r\n    1..1")], "the report ends early"),
])
def test_a_broken_report_is_refused_with_its_reason(broken, message):
    with pytest.raises(ValueError, match=message):
        parse_ktap(broken)


TRACE = """\
init: open the trace: ok
trace: # tracer: nop
trace: # entries-in-buffer/entries-written: 2/3   #P:1
trace:             init-1       [000] .....            2: clone: (f+0x2/0x9 <- kernel_clone) ret=14
init: a line of the workload
trace:            fsops-14      [000] d.Z..            3: op: (g+0x0/0x9) dfd=-100 path="/a b"
init: 4 lines of trace
"""


def test_the_guests_trace_is_read_from_its_prefixed_lines():
    trace = guest_trace(TRACE)
    assert trace.header == ("# tracer: nop", "# entries-in-buffer/entries-written: 2/3   #P:1")
    assert (trace.entries, trace.written) == (2, 3)
    assert [(t.comm, t.pid, t.flags, t.timestamp) for t in trace.lines] == \
        [("init", 1, ".....", "2"), ("fsops", 14, "d.Z..", "3")]
    assert events_of(trace) == [("clone", ("14",)), ("op", ("-100", "/a b"))]


@pytest.mark.parametrize("broken, message", [
    (TRACE.replace("written: 2/3", "written: none"), "has no entries-in-buffer"),
    (TRACE + "trace: something else\n", "not a probe event's trace line"),
])
def test_a_broken_trace_is_refused(broken, message):
    with pytest.raises(ValueError, match=message):
        guest_trace(broken)
