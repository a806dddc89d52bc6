"""The toy kernel's kretprobe recursion check (tests/kprobes/test_kretprobe.py
test_recursion: depth against maxactive) on a real self-recursive Linux function on the
workload's path: parse_probe_arg() (kernel/trace/trace_probe.c), which calls itself for a
dereference -- the guest's own parsing of `path=+0(%si):ustring` (kpemu_tracefs=1: init
writes kernel_images/linux/workload/kprobe_events) nests one frame inside another.  Found
by scanning the image for a `call` to a function's own start (30 such functions; this one
is the one the workload runs nested).

Per frame, the same rule as on the toy kernel: returns come innermost first; with fewer
instances than nested frames the outermost frames get them and the inner one is a miss
("maxactive")."""

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import Machine
from kprobes import Kprobe, Kprobes, Kretprobe
from tests.linux import LINUX_IMAGE
from tests.linux.guest import TRACEFS_SWITCH, cmdline_with

pytestmark = pytest.mark.slow

FUNCTION = "parse_probe_arg.isra.0"
OUTER = "traceprobe_parse_probe_arg+0x436/0x7b7"     # where each argument's parse returns
INNER = f"{FUNCTION}+0x438/0x556"                   # its call to itself
CALLS = 7          # op's dfd, path (and its +0(...) inner %si), openret, clone, write x2


def self_calls(m, name):
    """Return sites of every `call` in `name` to its own start."""
    fn = m.symbols.get(name)
    return [i.address + i.size for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read_image(fn.addr, fn.size), fn.addr)
        if i.mnemonic == "call" and i.op_str == hex(fn.addr)]


def traced(maxactive):
    m = Machine(LINUX_IMAGE, cmdline=cmdline_with(TRACEFS_SWITCH))
    k = Kprobes(m)
    returns, entries = [], []
    rp = Kretprobe(symbol_name=FUNCTION, maxactive=maxactive,
                   handler=lambda ri, regs: returns.append(m.symbols.format(ri.ret_addr)))
    k.register_kretprobe(rp)
    k.register_kprobe(Kprobe(symbol_name=FUNCTION,
                             pre_handler=lambda p, regs: entries.append(regs.sp) and 0))
    result = m.run()
    assert (result.reason, result.exit_code) == ("halt", 0)
    return m, rp, entries, returns


def test_the_function_calls_itself():
    m = Machine(LINUX_IMAGE)
    assert [m.symbols.format(a) for a in self_calls(m, FUNCTION)] == [INNER]


def test_every_frame_when_instances_suffice():
    m, rp, entries, returns = traced(maxactive=2)
    assert len(entries) == CALLS and entries[2] < entries[1]    # the third inside the second
    assert returns == [OUTER, INNER, OUTER] + [OUTER] * 4       # innermost first
    assert (rp.nmissed, rp.miss_report()) == (0, {})


def test_the_inner_frame_is_missed_with_one_instance():
    m, rp, entries, returns = traced(maxactive=1)
    assert len(entries) == CALLS
    assert returns == [OUTER] * (CALLS - 1)          # the outer frame kept its instance
    assert (rp.nmissed, rp.miss_report()) == (1, {"maxactive": 1})
