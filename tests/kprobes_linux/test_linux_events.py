"""kprobe_events on the Linux guest, end to end: `kpemu boot kernel_images/linux/vmlinux -e
...` shows every open of the workload with its path, every fork with the child's pid and
every exit with the Linux task's $comm; user memory is read (ustring, +u) through the
current task's page tables, and, as on x86_64 Linux, a user fetch of a kernel address and
a kernel fetch of a user address both give (fault).  Through the CLI and the Python API."""

import re

import pytest

from kprobes import Kprobes
from kprobes.events import KprobeEvents
from tests.cli.test_cli import kpemu
from tests.kprobes_linux.test_linux_kprobes import FORKS, OPENS
from tests.linux import LINUX_IMAGE

pytestmark = pytest.mark.slow

OPEN = "p:op do_sys_openat2 dfd=%di:s32 path=+0(%si):ustring"
CLONE = "r:clone kernel_clone ret=$retval:s64"
EXIT = "p:ex do_exit code=%di:s32 comm=$comm"
AT_FDCWD = -100
# do_exit(code): the wait status, (status & 0xff) << 8 for exit(status).  forkexec's
# child exits with 42 (forkexec.c); everything else with 0.  Who exits, in order: fsops;
# forkexec's child (pid 16, comm still "forkexec" after its exec of /bin/forkexec), then
# forkexec; pipes' child (pid 18), then pipes; fib; sleeper.
EXITS = [("fsops", 14, 0), ("forkexec", 16, 42 << 8), ("forkexec", 15, 0), ("pipes", 18, 0),
         ("pipes", 17, 0), ("fib", 19, 0), ("sleeper", 20, 0)]

LINE = re.compile(r"^ *(?P<comm>\S+)-(?P<pid>\d+) +\[000\] d\.\.\.\. +\d+\.\d{6}: "
                  r"(?P<event>\w+): \((?P<where>[^)]*)\) (?P<args>.*)$")


def expected_trace():
    """(comm, pid, event, args) of every record, in the order the workload makes them:
    fsops's opens come before its exit, each fork's record when kernel_clone returns in
    the parent."""
    opens = [("fsops", 14, "op", f'dfd={AT_FDCWD} path="{path}"') for path in OPENS]
    forks = [(comm, pid, "clone", f"ret={child}") for (comm, child), pid in
             zip(FORKS, [1, 1, 15, 1, 17, 1, 1])]
    exits = [(comm, pid, "ex", f'code={code} comm="{comm}"') for comm, pid, code in EXITS]
    # init forks fsops; fsops opens and exits; init forks forkexec, which forks its child;
    # the child exits, then forkexec; and so on through init.c's list.
    return ([forks[0]] + opens + [exits[0], forks[1], forks[2], exits[1], exits[2],
                                  forks[3], forks[4], exits[3], exits[4], forks[5], exits[5],
                                  forks[6], exits[6]])


def parse(lines):
    out = []
    for line in lines:
        mo = LINE.match(line)
        assert mo, line
        out.append((mo["comm"], int(mo["pid"]), mo["event"], mo["args"]))
    return out


def test_kpemu_boot_linux_traces_opens_forks_and_exits(linux_reference):
    r = kpemu("boot", LINUX_IMAGE, "-e", OPEN, "-e", CLONE, "-e", EXIT)
    assert r.returncode == 0, r.stderr
    console, _, rest = r.stdout.partition("# tracer: nop\n")
    assert console == linux_reference["console"].replace("\r\n", "\n")   # the UART's CRLF
    trace_text, _, profile_text = rest.partition("# kprobe_profile\n")
    trace = [ln for ln in trace_text.splitlines() if not ln.startswith("#")]
    assert parse(trace) == expected_trace()
    where = {ln.split(": (")[1].split(")")[0] for ln in trace if ": clone: " in ln}
    assert len(where) == 1 and where.pop().endswith(" <- kernel_clone")
    profile = profile_text.splitlines()
    assert [p.split() for p in profile[:3]] == [["op", "3", "0"], ["clone", "7", "0"],
                                                ["ex", "7", "0"]]
    assert r.stderr.startswith("kpemu: powered off with exit code 0")


def test_events_api_user_and_kernel_fetches_fault_as_linux_does(lm, linux_reference):
    """At do_sys_openat2(dfd, filename, how): %si is a user pointer, %sp a kernel one."""
    events = KprobeEvents(Kprobes(lm))
    events.write("p:user do_sys_openat2 s=+0(%si):ustring b=+u0(%si):u8 w=+u0(%si):u64")
    events.write("p:cross do_sys_openat2 us=+0(%sp):ustring uk=+u0(%sp):u64 "
                 "ks=+0(%si):string ku=+0(%si):u64 kk=+0(%sp):u64")
    events.enable()
    result = lm.run()
    assert result.exit_code == 0 and lm.console == linux_reference["console"]
    records = list(events.buffer)
    user = [r.values for r in records if r.event == "user"]
    assert [v["s"] for v in user] == OPENS
    assert [v["b"] for v in user] == [ord("/")] * 3
    assert [v["w"] for v in user] == [int.from_bytes(p[:8].encode(), "little") for p in OPENS]
    cross = [r.values for r in records if r.event == "cross"]
    assert len(cross) == 3
    # a kernel read of a kernel address: the return address on the stack
    assert {lm.symbols.symbol_at(v["kk"]).name for v in cross} == {"do_sys_open"}
    # the rest faults (None in the typed values, "(fault)" in the text)
    assert [[v[n] for n in ("us", "uk", "ks", "ku")] for v in cross] == [[None] * 4] * 3
    text = [r.args_text for r in records if r.event == "cross"][0]
    assert text.startswith(" us=(fault) uk=(fault) ks=(fault) ku=(fault) kk=0x") or \
        text.startswith(" us=(fault) uk=(fault) ks=(fault) ku=(fault) kk=")
