"""Linux 6.1 (kernel_images/linux, committed: no kernel build) boots in kpemu to the end of
its workload: the exact workload console and exit code, m.boot() stopping where init is
about to run, current/tasks/stack traces through the DWARF offsets, ring 3 (timer
interrupts taken there, host reads of kernel memory meanwhile), two runs byte-identical,
and the kernel's own panic as an oops report."""

import pytest

from emu import Machine
from emu.errors import MachineError
from emu.linux import FALLBACK_CMDLINE, default_cmdline
from tests.linux import LINUX_IMAGE

pytestmark = pytest.mark.slow

# What the workload prints (kernel_images/linux/workload), byte for byte, after the line
# the kernel prints as it starts init.
WORKLOAD = """\
Run /init as init process
init: pid 1, kpemu workload starting
init: mount proc on /proc: ok
init: mount sysfs on /sys: ok
init: mount tmpfs on /tmp: ok
fsops: mkdir /tmp/work: ok
fsops: stat /tmp/work is a directory: ok
fsops: create /tmp/work/note.txt: ok
fsops: write 17 bytes: ok
fsops: read the same 17 bytes back: ok
fsops: /proc/self/stat begins "14 (fsops)"
fsops: read /proc/self/stat: ok
init: /bin/fsops exited with 0
forkexec: fork: ok
forkexec: child pid 16 exec'd with "as-child", exiting with 42
forkexec: waitpid: ok
forkexec: parent pid 15 saw child pid 16 exit with 42
forkexec: child's exit status is 42: ok
init: /bin/forkexec exited with 0
pipes: pipe: ok
pipes: parent read 5 lines, 95 bytes from child pid 18
pipes: 5 lines through the pipe: ok
pipes: writer exited 0: ok
init: /bin/pipes exited with 0
fib: fib(27) = 196418 in 635621 calls
fib: the recursive value is the iterative one: ok
init: /bin/fib exited with 0
sleeper: pid 20, ppid 1, sleeping 20 ms
sleeper: nanosleep: ok
sleeper: slept at least that long: ok
init: /bin/sleeper exited with 0
init: workload done, 0 failed; powering off with code 0
"""


@pytest.fixture(scope="module")
def run():
    """One boot and run to power-off, watched: what boot left, and at every interrupt the
    machine delivered, the CPL it came in and (from ring 3) current's comm, read by the host
    from kernel memory while user code ran."""
    m = Machine(LINUX_IMAGE)
    seen = {"irq_cpl": [], "user_comms": set(), "trap_cpl3": 0}

    def watch(event):
        cpl = m.engine.cpl
        if event.kind == "irq":
            seen["irq_cpl"].append(cpl)
            if cpl == 3:
                seen["user_comms"].add(m.current.comm)
        elif event.kind == "trap" and cpl == 3:
            seen["trap_cpl3"] += 1

    m.observers.append(watch)
    boot = m.boot()
    seen.update(boot=boot, current=m.current, tasks=m.tasks(),
                trace=m.format_trace(m.stack_trace()), boot_ip=m.engine.reg("ip"))
    seen["result"] = m.run()
    seen["m"] = m
    return seen


def test_boot_stops_where_init_is_about_to_run(run):
    m = run["m"]
    assert run["boot"].reason == "boot"
    assert run["boot_ip"] == m.symbols.lookup_name("run_init_process")
    assert (run["current"].pid, run["current"].comm) == (1, "swapper")
    assert run["trace"][:2] == ["run_init_process+0x0/0x97", "kernel_init+0x6f/0x106"]
    assert run["trace"][-1].startswith("ret_from_fork+")


def test_tasks_at_boot_through_the_dwarf_offsets(run):
    tasks = run["tasks"]
    assert [(t.pid, t.comm) for t in tasks[:3]] == [(0, "swapper"), (1, "swapper"),
                                                    (2, "kthreadd")]
    assert [t.pid for t in tasks] == sorted(t.pid for t in tasks)
    assert {t.state for t in tasks} <= {"running", "sleeping", "disk sleep", "idle"}
    assert tasks[1].state == "running" and tasks[2].state == "sleeping"
    assert all(t.stack % run["m"].layout.thread_size == 0 for t in tasks)


def test_the_workload_runs_to_its_end_and_exit_code(run):
    m, result = run["m"], run["result"]
    assert (result.reason, result.exit_code, m.exit_code) == ("halt", 0, 0)
    console = m.console.replace("\r\n", "\n")
    assert console.startswith("Linux version 6.1.192 (kpemu@kpemu) ")
    assert console.endswith("\n" + WORKLOAD)
    assert f"Kernel command line: {default_cmdline(m.image)}\n" in console
    # KUnit is built in (tests/linux/test_linux_kunit.py) but runs only when asked.
    assert "\nkunit: disabled\n" in console and "KTAP" not in console


def test_ring3_timer_interrupts_and_host_reads_while_user_code_runs(run):
    assert run["irq_cpl"].count(3) >= 1 and run["irq_cpl"].count(0) >= 1
    assert set(run["irq_cpl"]) == {0, 3}
    assert run["user_comms"] <= {"init", "fsops", "forkexec", "pipes", "fib", "sleeper"}
    assert "fib" in run["user_comms"]           # 635621 calls: ticks land in user code
    assert run["trap_cpl3"] > 0                 # page faults of user code (demand paging)


def test_two_runs_are_byte_identical(run):
    m = Machine(LINUX_IMAGE)
    result = m.run()
    first = run["m"]
    assert (result.reason, result.exit_code) == ("halt", 0)
    assert bytes(m.uart.output) == bytes(first.uart.output)
    assert (m.clock.now, m.clock.executed, m.clock.idle, m.irqs) == \
        (first.clock.now, first.clock.executed, first.clock.idle, first.irqs)


def test_the_kernels_panic_is_an_oops_report():
    m = Machine(LINUX_IMAGE, cmdline=FALLBACK_CMDLINE + " rdinit=/nonexistent "
                "init=/nonexistent")
    result = m.run()
    assert result.reason == "oops"
    oops = result.oops
    assert oops.message == "Kernel panic - not syncing: Requested init /nonexistent " \
        "failed (error -2)."
    assert oops.backtrace[:2] == ["panic+0x0/0x253", "kernel_init+0xb6/0x106"]
    assert oops.task == "swapper-1"
    assert "Kernel Offset: disabled" in oops.console_tail
    with pytest.raises(MachineError, match="oopsed"):
        m.run()


def test_a_kernel_oops_stops_the_run_with_the_faulting_context():
    """A call through a NULL pointer in the kernel (the host sends init's kernel thread to
    address 0 at boot): Linux prints its oops, and kpemu's report holds the same registers
    -- those of the pt_regs oops_end() is given -- and Linux's first line."""
    m = Machine(LINUX_IMAGE)
    m.boot()
    m.engine.set_reg("ip", 0)
    result = m.run()
    assert result.reason == "oops"
    oops = result.oops
    assert oops.message == "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    assert oops.task == "swapper-1" and oops.regs["ip"] == 0
    lines = m.console.replace("\r\n", "\n").splitlines()
    assert "#PF: error_code(0x0010) - not-present page" in lines
    printed = next(ln for ln in lines if ln.startswith("RSP: 0000:"))
    assert printed == f"RSP: 0000:{oops.regs['sp']:016x} EFLAGS: {oops.regs['flags']:08x}"
    printed = next(ln for ln in lines if ln.startswith("RAX: "))
    assert printed == (f"RAX: {oops.regs['ax']:016x} RBX: {oops.regs['bx']:016x} "
                       f"RCX: {oops.regs['cx']:016x}")
    assert oops.backtrace[-1].startswith("ret_from_fork+")
