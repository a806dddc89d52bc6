"""A small kallsyms and a fake probe context: the language layer is tested without a machine;
and `ev`, the kprobe_events files over a real booted machine, for the command layer.

The symbols are real emu.symbols.Symbols, loaded from a hand-made image, so sizes and
`sym+0xoff/0xsize` come from the same code the emulator uses.
"""

from types import SimpleNamespace

import pytest

from emu import Machine
from emu.errors import MemoryFault
from emu.image import ElfSymbol, KernelImage
from emu.symbols import Symbols
from kprobes import Kprobes
from kprobes.arch.x86_64 import trap as arch_trap
from kprobes.events import KprobeEvents

TEXT = 0xFFFFFFFF81000000
DATA = 0xFFFFFFFF82000000

# name, address, executable, bind
_LAYOUT = [
    ("vfs_read", TEXT + 0x1000, True, "STB_GLOBAL"),
    ("kernel_clone", TEXT + 0x1100, True, "STB_GLOBAL"),
    ("do_exit", TEXT + 0x1200, True, "STB_GLOBAL"),
    ("kfree", TEXT + 0x1300, True, "STB_GLOBAL"),
    ("dup_sym", TEXT + 0x1400, True, "STB_LOCAL"),      # two locals of one name
    ("dup_sym", TEXT + 0x1500, True, "STB_LOCAL"),
    ("schedule", TEXT + 0x1600, True, "STB_GLOBAL"),
    ("_sdata", DATA, False, "STB_GLOBAL"),
    ("jiffies", DATA + 0x40, False, "STB_GLOBAL"),
]


def make_symbols():
    syms = [ElfSymbol(name, addr, 0, "STT_FUNC" if ex else "STT_OBJECT", bind,
                      ".text" if ex else ".data", ex)
            for name, addr, ex, bind in _LAYOUT]
    image = KernelImage(path="fake", entry=TEXT, segments=[], symbols=syms, constants={},
                        text_ranges=[(TEXT, TEXT + 0x1700)],
                        sections={".text": (TEXT, 0x1700, 6), ".data": (DATA, 0x1000, 3)})
    ks = Symbols()
    ks.load_kernel(image)
    return ks


class FakeMemory:
    """Guest memory as a dict of bytes; an absent byte is an unmapped one."""

    def __init__(self):
        self.bytes = {}

    def write(self, addr, data):
        for i, b in enumerate(data):
            self.bytes[addr + i] = b

    def u64(self, addr, value):
        self.write(addr, (value & (1 << 64) - 1).to_bytes(8, "little"))

    def read(self, addr, size):
        try:
            return bytes(self.bytes[addr + i] for i in range(size))
        except KeyError:
            raise MemoryFault(addr) from None


STACK_TOP = 0xFFFF888000014000          # an 8K-aligned stack spans ...12000-...14000
SP = STACK_TOP - 0x100


@pytest.fixture(scope="session")
def ksyms():
    return make_symbols()


@pytest.fixture
def mem():
    m = FakeMemory()
    m.write(STACK_TOP - 0x2000, bytes(0x2000))      # the whole current stack is mapped
    return m


@pytest.fixture
def ctx(mem, ksyms):
    regs = SimpleNamespace(ax=0, bx=0, cx=0, dx=0, si=0, di=0, bp=0, sp=SP, ip=TEXT + 0x1001,
                           flags=0x246, cs=0x10, ss=0x18, r8=0, r9=0, r10=0, r11=0, r12=0,
                           r13=0, r14=0, r15=0)
    return SimpleNamespace(regs=regs, read=mem.read, symbols=ksyms, comm="bash", retval=None,
                           entry_args=None)


@pytest.fixture
def ev():
    """(machine, kprobes, kprobe_events): booted, kprobes installed before boot."""
    m = Machine()
    k = Kprobes(m)
    m.boot()
    return m, k, KprobeEvents(k)


@pytest.fixture(autouse=True, params=["c-path", "python-path"])
def trap_path(request, monkeypatch):
    """Every events test runs on both trap paths: trap.c's C path, which records a kprobe
    event's hit natively (the default), and the Python reference for every trap."""
    monkeypatch.setattr(arch_trap, "TRAP_FASTPATH", request.param == "c-path")
    return request.param
