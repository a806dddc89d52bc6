"""The Linux profile's pieces that need no run: the choice of profile, the PVH entry done
host-side with a QEMU-shaped hvm_start_info, the offsets file against the image, the
PIT write that shortens the running slice, and what a Linux machine refuses."""

import json
import struct

import pytest
from elftools.elf.elffile import ELFFile

from emu import Machine
from emu.errors import ImageError, MachineError
from emu.image import HVM_START_MAGIC, load_image
from emu.linux import e820_map, initrd_paddr
from emu.machine import DEFAULT_IMAGE
from emu.memory import START_KERNEL_MAP
from tests.linux import LINUX_DIR, LINUX_IMAGE


@pytest.fixture(scope="module")
def fresh():
    return Machine(LINUX_IMAGE)


def test_the_profile_is_chosen_from_the_image(fresh):
    assert fresh.kind == "linux" and Machine().kind == "toykernel"
    assert fresh.module_area is None and fresh.hc_port is None
    assert fresh.cmdline == (LINUX_DIR / "cmdline").read_text().strip()


def test_pvh_entry_is_done_host_side(fresh):
    m = fresh
    sym = m.image.symbol_value
    eng = m.engine
    info = m.mem.read_phys(sym("pvh_start_info") - START_KERNEL_MAP, 56)
    magic, version, _flags, nr_modules, modlist, cmdline_pa, _rsdp, memmap, entries, _r = \
        struct.unpack("<IIIIQQQQII", info)
    assert (magic, version, nr_modules, entries) == (HVM_START_MAGIC, 1, 1, 5)
    assert m.mem.read_phys(cmdline_pa, len(m.cmdline) + 1) == m.cmdline.encode() + b"\0"
    table = [struct.unpack_from("<QQI", m.mem.read_phys(memmap + 24 * i, 24))
             for i in range(entries)]
    assert table == e820_map(eng.ram_size) == [
        (0, 0x9FC00, 1), (0x9FC00, 0x60400, 2), (0x100000, 0x7EE0000, 1),
        (0x7FE0000, 0x20000, 2), (0xFFFC0000, 0x40000, 2)]
    initrd = (LINUX_DIR / "initramfs.cpio").read_bytes()
    addr, size = struct.unpack("<QQ", m.mem.read_phys(modlist, 16))
    assert (addr, size) == (initrd_paddr(eng.ram_size, len(initrd)), len(initrd))
    assert addr == 0x7FAA000 and m.mem.read_phys(addr, size) == initrd
    # where pvh_start_xen's far jump lands, in 64-bit mode on the image's own tables
    assert eng.reg("cr3") == sym("init_top_pgt") - START_KERNEL_MAP
    assert eng.reg("cr0") & 0x80000001 == 0x80000001 and eng.reg("cr4") & 0x20
    assert (eng.reg("cs"), eng.reg("ss"), eng.cpl) == (0x8, 0x10, 0)
    assert eng.reg("sp") == sym("early_stack_end") - START_KERNEL_MAP
    entry = m.image.pvh_entry
    assert entry < eng.reg("ip") < entry + 0x100
    assert m.symbols.format(eng.reg("ip") + START_KERNEL_MAP).startswith("pvh_start_xen+")


def test_the_offsets_file_matches_the_image(fresh):
    data = json.loads((LINUX_DIR / "offsets.json").read_text())
    sym = fresh.image.symbol_value
    assert data["thread_size"] == sym("__end_init_task") - sym("__start_init_task") == 16384
    layout = fresh.layout
    # init_task, read through the offsets in the loaded image: pid 0, "swapper", its list
    # empty, its stack the init stack
    init = fresh.guest.read_task(sym("init_task"))
    assert (init.pid, init.comm, init.state, init.stack) == \
        (0, "swapper", "running", sym("init_stack"))
    head = sym("init_task") + layout.tasks
    assert fresh.mem.u64(head) == head
    assert data["task_state_array"][0] == "R (running)" and len(data["task_state_array"]) == 9
    assert data["structs"]["task_struct"]["comm_len"] == 16


def test_a_pit_write_cuts_the_running_slice_short():
    m = Machine()
    icount = m.engine.icount
    out = m.engine.out_ports
    assert out[0x40] == out[0x43] != m.pit.write     # the machine's wrapper of the PIT's
    icount.executed, icount.deadline = 5000, 10**12
    out[0x43](0x43, 1, 0x34)             # channel 0, lo/hi, mode 2
    out[0x40](0x40, 1, 100)
    out[0x40](0x40, 1, 0)
    assert icount.deadline == m.pit.next_deadline() < 10**12
    assert icount.deadline == 5000 + (101 * 10**9) // 1193182
    icount.deadline = 5010                 # already sooner: kept
    out[0x43](0x43, 1, 0x34)
    out[0x40](0x40, 1, 100)
    out[0x40](0x40, 1, 0)
    assert icount.deadline == 5010
    icount.deadline = 10**12
    m.call_depth = 1                       # inside m.call no interrupt comes: untouched
    out[0x40](0x40, 1, 100)
    out[0x40](0x40, 1, 0)
    assert icount.deadline == 10**12


def test_what_a_linux_machine_refuses(fresh, tmp_path):
    with pytest.raises(MachineError, match="m.call needs the toy kernel's module area"):
        fresh.call("panic", 0)
    with pytest.raises(MachineError, match="modules need"):
        fresh.load_module("x.o")
    with pytest.raises(ImageError, match="takes no initrd"):
        Machine(initrd=LINUX_DIR / "initramfs.cpio")
    with pytest.raises(ImageError, match="cannot read the initrd"):
        Machine(LINUX_IMAGE, initrd=tmp_path / "missing.cpio")


def test_a_booted_linux_machine_restores_and_runs_byte_identically():
    m = Machine(LINUX_IMAGE)
    m.boot()
    snap = m.snapshot()
    first = m.run(max_insns=3_000_000)
    console, clock = bytes(m.uart.output), (m.clock.now, m.clock.idle, m.irqs)
    assert b"\r\ninit: mount tmpfs on /tmp: ok\r\n" in console     # user space ran
    m.restore(snap)
    assert m.booted and m.clock.now == snap.icount[0]
    again = m.run(max_insns=3_000_000)
    assert (again.reason, again.insns) == (first.reason, first.insns) == ("limit", 3_000_000)
    assert bytes(m.uart.output) == console
    assert (m.clock.now, m.clock.idle, m.irqs) == clock


@pytest.mark.parametrize("path", [LINUX_IMAGE, DEFAULT_IMAGE])
def test_image_symbols_are_pyelftools_own(path):
    """load_image reads .symtab as raw entries (fast); differential: pyelftools' iteration
    gives the same names, values, sizes, types, binds and sections."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        expected = []
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            info, shndx = sym["st_info"], sym["st_shndx"]
            if not sym.name or info["type"] in ("STT_FILE", "STT_SECTION"):
                continue
            if shndx == "SHN_ABS":
                section = "ABS"
            elif isinstance(shndx, int):
                section = elf.get_section(shndx).name
            else:
                continue
            expected.append((sym.name, sym["st_value"], sym["st_size"], info["type"],
                             info["bind"], section))
    got = [(s.name, s.value, s.size, s.kind, s.bind, s.section)
           for s in load_image(path).symbols]
    assert got == expected and len(got) > 200


BUILT = LINUX_DIR / "build" / "linux-source-6.1" / "vmlinux"


@pytest.mark.slow
@pytest.mark.skipif(not BUILT.exists(), reason="no kernel build tree (kernel_images/linux/"
                    "build, made by `make images`): the committed offsets are checked "
                    "against the image above instead")
def test_the_offsets_file_is_what_the_build_extracts():
    import importlib.util
    spec = importlib.util.spec_from_file_location("extract_offsets",
                                                  LINUX_DIR / "extract_offsets.py")
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    assert extract.extract(str(BUILT)) == json.loads((LINUX_DIR / "offsets.json").read_text())
