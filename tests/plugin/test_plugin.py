"""The kpemu pytest plugin, tested with inner pytest sessions (pytester): fixtures from the
entry point, isolation, the leak check, the marker, the options, report sections, xdist.
Few sessions, each doing much: every one boots a machine."""

import shutil

import pytest

from emu.machine import DEFAULT_IMAGE

SCENARIOS = '''
import pytest
from kprobes import Kprobe

ADDR = "init_task"

def test_a_dirties_everything(machine, kprobes, kprobe_events):
    machine.write(ADDR, b"\\xaa" * 16)
    kprobes.register_kprobe(Kprobe(symbol_name="do_fork"))
    kprobe_events.add("r:mkret sys_mkdir ret=$retval:s64")
    assert machine.run().reason == "halt"
    assert [r.ret for r in kprobe_events.records("mkret")] == [0, 0, 0, -17]

def test_b_sees_none_of_it(machine, kprobes, kprobe_events):
    assert machine.read(ADDR, 16) != b"\\xaa" * 16
    assert kprobes.probes() == [] and kprobe_events.records("mkret") == []
    assert machine.booted and not machine.halted
    assert machine.console.endswith("starting the workload\\n")
    assert machine.read("do_fork", 1) != b"\\xcc"

def test_c_leaks_a_text_write(machine, kprobes):
    machine.write("sys_getpid", b"\\x90")

def test_d_fails_with_probes(machine, kprobes, kprobe_events):
    kprobe_events.add("p:mk sys_mkdir")
    machine.run(max_insns=300_000)
    assert False, "on purpose"

def test_e_fails_after_an_oops(machine):
    machine.write("sys_getpid", b"\\x0f\\x0b")      # ud2
    assert machine.run().reason == "halt"

def test_f_bad_definition_has_the_caret(kprobe_events):
    with pytest.raises(Exception) as info:
        kprobe_events.add("p:bad sys_mkdir x=%zz")
    assert str(info.value).splitlines()[-1].index("^") == len("  Command: p:bad sys_mkdir x=")

@pytest.mark.kpemu(kretprobe_design="stack", cmdline="marked")
class TestMarked:
    def test_marker(self, machine, kprobes):
        assert kprobes.kretprobes.design == "stack"
        assert "Command line: marked" in machine.console

    @pytest.mark.kpemu(kretprobe_design="task")
    def test_closest_marker_wins(self, machine, kprobes):
        assert kprobes.kretprobes.design == "task"
        assert "Command line: marked" in machine.console
'''


def test_fixtures_isolation_leak_check_marker_and_reports(pytester):
    pytester.makepyfile(test_scenarios=SCENARIOS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, failed=2, errors=1)   # c passes, then errs
    out = result.stdout.str()
    assert "ERROR at teardown of test_c_leaks_a_text_write" in out
    assert "the kernel text at 0x" in out and "(sys_getpid+0x0/" in out
    assert "is 0x90, not the image's" in out
    d = out[out.index("_ test_d_fails_with_probes _"):out.index("_ test_e_fails_after_an_oops _")]
    for section in ("kpemu console", "kpemu kprobes", "kpemu trace", "kpemu location"):
        assert section in d
    assert "sys_mkdir+0x0" in d and "mk: (sys_mkdir+0x0/" in d
    assert "kpemu oops" not in d
    e = out[out.index("_ test_e_fails_after_an_oops _"):]
    assert "kpemu oops" in e and "invalid opcode at sys_getpid" in e
    assert "kpemu kprobes" not in e


def test_options_and_their_help(pytester):
    pytester.makepyfile(test_opts='''
def test_options(machine, kprobes):
    assert "Command line: from the option" in machine.console
    assert kprobes.kretprobes.design == "stack"
''')
    shutil.copy(DEFAULT_IMAGE, pytester.path / "my-vmlinux")
    result = pytester.runpytest_inprocess("--kpemu-image", "my-vmlinux", "--kpemu-cmdline",
                                          "from the option", "--kpemu-design", "stack")
    result.assert_outcomes(passed=1)
    help_text = pytester.runpytest_inprocess("--help").stdout.str()
    assert "kpemu: a fresh booted emulated kernel per test:" in help_text
    for option in ("--kpemu-image=PATH", "--kpemu-cmdline=STR", "--kpemu-design={task,stack}"):
        assert option in help_text
    off = pytester.runpytest_inprocess("-p", "no:kpemu")
    off.assert_outcomes(errors=1)
    assert "fixture 'machine' not found" in off.stdout.str()


@pytest.mark.slow
def test_the_entry_point_in_a_fresh_process_under_xdist(pytester):
    """A new process finds the plugin from its entry point alone; each of two xdist
    workers boots one machine and restores it for every one of its tests."""
    pytester.makepyfile(test_workers='''
import os
import pytest

@pytest.mark.parametrize("n", range(6))
def test_one(machine, n, worker_id):
    with open(f"seen-{worker_id}-{os.getpid()}", "a") as f:
        f.write(f"{id(machine)} {machine.clock.now}\\n")
    machine.run(max_insns=1000 * (n + 1))
''')
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    seen = sorted(pytester.path.glob("seen-gw*"))
    assert len(seen) == 2
    for path in seen:
        lines = path.read_text().split()
        machines, clocks = set(lines[0::2]), set(lines[1::2])
        assert len(machines) == 1 and len(clocks) == 1    # one machine, always as booted


LINUX_SCENARIOS = '''
import pytest
from kprobes import Kprobe, Kretprobe

def test_a_linux_workload_under_probes(machine, kprobes, kprobe_events):
    assert machine.kind == "linux" and machine.current.comm == "swapper"
    kprobe_events.add("p:op do_sys_openat2 path=+0(%si):ustring")
    forks = []
    kprobes.register_kretprobe(Kretprobe(symbol_name="kernel_clone",
                                         handler=lambda ri, regs: forks.append(regs.ax)))
    result = machine.run()
    assert (result.reason, result.exit_code) == ("halt", 0)
    assert [r.path for r in kprobe_events.records("op")] == [
        "/tmp/work/note.txt", "/tmp/work/note.txt", "/proc/self/stat"]
    assert [r.comm for r in kprobe_events.records("op")] == ["fsops"] * 3
    assert forks == [14, 15, 16, 17, 18, 19, 20]

def test_b_restored_to_init_about_to_run(machine, kprobes):
    assert machine.booted and not machine.halted and kprobes.probes() == []
    assert "Freeing unused kernel image" in machine.console      # boot went that far,
    assert "Run /init" not in machine.console                     # init not yet run
    assert machine.read("do_sys_openat2", 1) != b"\\\\xcc"

@pytest.mark.kpemu(kretprobe_design="stack")
def test_c_stack_design_fails_with_sections(machine, kprobes, kprobe_events):
    kprobe_events.add("r:clone kernel_clone ret=$retval:s64")
    machine.run(max_insns=3_000_000)
    assert False, "on purpose"
'''


@pytest.mark.slow
def test_the_linux_image_through_the_option(pytester):
    """--kpemu-image with the Linux image: `machine` is Linux booted to init (restored per
    test), kprobes and kprobe_events work on it, a failure gets the report sections."""
    from tests.linux import LINUX_IMAGE
    pytester.makepyfile(test_linux=LINUX_SCENARIOS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--kpemu-image",
                                          str(LINUX_IMAGE))
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    c = out[out.index("_ test_c_stack_design_fails_with_sections _"):]
    for section in ("kpemu console", "kpemu kprobes", "kpemu trace", "kpemu location"):
        assert section in c
    assert "clone: (__x64_sys_fork+0x" in c and "ret=14" in c
