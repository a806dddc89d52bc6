"""Linux's own kprobes test suite (lib/test_kprobes.c, KUnit suite `kprobes_test`) on kpemu's
CPU: the committed image has it built in, and it runs at boot only when the command line
says kunit.enable=1 (KUNIT_DEFAULT_ENABLED is off, so a default boot prints `kunit: disabled`
and runs none).  Every case registers a kprobe or kretprobe of the guest's own kprobes and
checks what its handlers saw: int3, the TF single-step of the copied instruction and the #DB
after it, the kretprobe trampoline and stack traces through it, all delivered by kpemu.  The
KTAP report is read back from the console, strictly (tests/linux/guest.py)."""

import pytest

from emu import Machine
from tests.linux import LINUX_IMAGE
from tests.linux.guest import KUNIT_SWITCH, Case, cmdline_with, console_lines, parse_ktap

pytestmark = pytest.mark.slow

KPROBES_CASES = ("test_kprobe", "test_kprobes", "test_kretprobe", "test_kretprobes",
                 "test_stacktrace_on_kretprobe", "test_stacktrace_on_nested_kretprobe")
ALL_PASS = {"pass": 6, "fail": 0, "skip": 0, "total": 6}


def check_kprobes_suite_passed(console):
    """Every case of kprobes_test passed, in order, and the report says so three ways (each
    case's line, the suite's counts and result, the totals); no `not ok` anywhere."""
    report = parse_ktap(console)
    assert [(s.number, s.name, s.ok) for s in report.suites] == [(1, "kprobes_test", True)]
    suite = report.suites[0]
    assert suite.cases == tuple(Case(i, name, True, "")
                                for i, name in enumerate(KPROBES_CASES, 1))
    assert suite.counts == report.totals == ALL_PASS
    assert not any("not ok" in ln for ln in console_lines(console))
    return report


@pytest.fixture(scope="module")
def kunit_run():
    m = Machine(LINUX_IMAGE, cmdline=cmdline_with(KUNIT_SWITCH))
    return m, m.run()


def test_linux_kprobes_kunit_suite_passes_on_kpemu(kunit_run):
    m, result = kunit_run
    assert (result.reason, result.exit_code) == ("halt", 0)
    check_kprobes_suite_passed(m.console)


def test_the_suite_runs_before_init_and_the_workload_still_runs(kunit_run):
    lines = console_lines(kunit_run[0].console)
    assert "kunit: disabled" not in lines
    assert lines.index("ok 1 kprobes_test") < lines.index("Run /init as init process")
    assert "init: workload done, 0 failed; powering off with code 0" in lines
