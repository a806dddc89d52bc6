"""The image's PVH entry, checked without QEMU: the Xen note, the 32-bit stub it points at,
and kpemu still entering at startup_64 (issue 3)."""

import struct

import pytest
from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs
from elftools.elf.elffile import ELFFile

from emu.machine import DEFAULT_IMAGE, Machine

START_KERNEL_MAP = 0xffffffff80000000
XEN_ELFNOTE_PHYS32_ENTRY = 18
HVM_START_MAGIC = 0x336EC578
MSR_EFER = 0xC0000080
EFER_LME = 0x100
X86_CR4_PAE = 0x20
X86_CR0_PE_PG = 0x80000001


@pytest.fixture(scope="module")
def elf():
    with open(DEFAULT_IMAGE, "rb") as f:
        yield ELFFile(f)


def _symbol(elf, name):
    syms = elf.get_section_by_name(".symtab").get_symbol_by_name(name)
    assert syms, f"no symbol {name}"
    return syms[0]


def _pa(vaddr):
    return vaddr - START_KERNEL_MAP if vaddr >= START_KERNEL_MAP else vaddr


def _xen_notes(elf):
    notes = []
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_NOTE":
            notes += [n for n in seg.iter_notes()
                      if n["n_name"] == "Xen" and n["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY]
    return notes


def _desc_bytes(note):
    desc = note["n_descdata"]
    return desc.encode("latin-1") if isinstance(desc, str) else bytes(desc)


def _read_phys(elf, paddr, size):
    """Bytes at physical address `paddr` as QEMU loads them (PT_LOAD at p_paddr)."""
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD" and seg["p_paddr"] <= paddr < seg["p_paddr"] + seg["p_filesz"]:
            off = paddr - seg["p_paddr"]
            return seg.data()[off:off + size]
    raise AssertionError(f"PA {paddr:#x} is not in any PT_LOAD's file image")


def test_pvh_note_points_at_pvh_start_xen(elf):
    notes = _xen_notes(elf)
    assert len(notes) == 1, "exactly one Xen PHYS32_ENTRY note in a PT_NOTE segment"
    desc = _desc_bytes(notes[0])
    # An 8-byte field: QEMU 7.2 reads a host size_t for ELF64, newer QEMU 4 bytes LE.
    assert notes[0]["n_descsz"] == 8 and len(desc) == 8
    entry = struct.unpack("<Q", desc)[0]
    assert entry < 1 << 32, "a 32-bit physical entry"
    sym = _symbol(elf, "pvh_start_xen")
    assert sym["st_info"]["type"] == "STT_FUNC"
    assert sym["st_value"] >= START_KERNEL_MAP, "linked high, like the rest of the kernel"
    assert entry == sym["st_value"] - START_KERNEL_MAP
    # The entry is inside a loadable segment's physical range, in executable bytes.
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    holder = [s for s in loads if s["p_paddr"] <= entry < s["p_paddr"] + s["p_filesz"]]
    assert len(holder) == 1
    assert holder[0]["p_flags"] & 1, "PF_X"
    # QEMU loads at p_paddr: every PT_LOAD's p_paddr is its p_vaddr minus the kernel map.
    for s in loads:
        assert s["p_paddr"] == s["p_vaddr"] - START_KERNEL_MAP


def test_the_note_segment_is_well_formed(elf):
    segs = [s for s in elf.iter_segments() if s["p_type"] == "PT_NOTE"]
    assert segs
    for s in segs:
        assert s["p_align"] in (4, 8)
        assert s["p_filesz"] == s["p_memsz"] > 0
        assert s["p_offset"] % 4 == 0


def test_pvh_stub_is_32_bit_code_that_enters_long_mode(elf):
    entry = struct.unpack("<Q", _desc_bytes(_xen_notes(elf)[0]))[0]
    size = _symbol(elf, "pvh_start_xen")["st_size"]
    code = _read_phys(elf, entry, size)
    insns = []
    for insn in Cs(CS_ARCH_X86, CS_MODE_32).disasm(code, entry):
        insns.append(insn)
        if insn.mnemonic == "ljmp":
            break
    text = [f"{i.mnemonic} {i.op_str}".strip() for i in insns]
    assert sum(i.size for i in insns) <= size
    assert insns[-1].mnemonic == "ljmp", f"no far jump in the 32-bit part: {text}"

    pgd_pa = _pa(_symbol(elf, "init_level4_pgt")["st_value"])

    def index(pred, what):
        found = [n for n, t in enumerate(text) if pred(t)]
        assert found, f"no {what} in {text}"
        return found[0]

    cr4 = index(lambda t: t == "mov cr4, eax", "mov cr4")
    assert f"or eax, {X86_CR4_PAE:#x}" in text[:cr4], "CR4.PAE set before it is written"
    cr3 = index(lambda t: t == "mov cr3, eax", "mov cr3")
    assert text[cr3 - 1] == f"mov eax, {pgd_pa:#x}", "CR3 = PA of init_level4_pgt"
    wrmsr = index(lambda t: t == "wrmsr", "wrmsr")
    assert f"mov ecx, {MSR_EFER:#x}" in text[:wrmsr]
    assert text[wrmsr - 1] == f"or eax, {EFER_LME:#x}", "EFER.LME"
    cr0 = index(lambda t: t == "mov cr0, eax", "mov cr0")
    assert text[cr0 - 1] == f"or eax, {X86_CR0_PE_PG:#x}", "CR0.PG|PE"
    # Order: PAE and CR3 and LME before paging goes on; the far jump last.
    assert max(cr4, cr3, wrmsr) < cr0 < len(text) - 1

    # The far jump goes to a 64-bit code selector of the GDT the stub loaded ...
    lgdt = index(lambda t: t.startswith("lgdt"), "lgdt")
    gdtr = int(text[lgdt].split("[")[1].rstrip("]"), 16)
    limit, base = struct.unpack("<HI", _read_phys(elf, gdtr, 6))
    selector, target = (int(x, 16) for x in text[-1].split()[1].split(":"))
    assert selector + 8 <= limit + 1
    desc = struct.unpack("<Q", _read_phys(elf, base + selector, 8))[0]
    assert desc >> 47 & 1, "present"
    assert desc >> 43 & 1, "code segment"
    assert desc >> 53 & 1 and not desc >> 54 & 1, "L=1, D=0: 64-bit code"
    # ... inside the stub, where 64-bit code moves the boot info into %rsi and jumps to
    # startup_64 at its high address.
    assert entry < target < entry + size
    tail = _read_phys(elf, target, entry + size - target)
    long_mode = [f"{i.mnemonic} {i.op_str}" for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(tail, target)]
    startup_64 = _symbol(elf, "startup_64")["st_value"]
    assert long_mode[0] == "mov esi, ebx"
    assert f"movabs rax, {startup_64:#x}" in long_mode
    assert long_mode[-1] == "jmp rax"


def test_kpemu_boots_at_startup_64(elf):
    startup_64 = _symbol(elf, "startup_64")["st_value"]
    assert elf["e_entry"] == startup_64
    m = Machine()
    assert m.image.entry == startup_64
    assert m.engine.reg("ip") == startup_64
    # Long mode with the image's own page tables, boot info (hvm_start_info) in %rsi.
    assert m.engine.reg("cr3") == _pa(_symbol(elf, "init_level4_pgt")["st_value"])
    info_pa = m.engine.reg("si")
    magic, version = struct.unpack("<II", m.mem.read_phys(info_pa, 8))
    assert (magic, version) == (HVM_START_MAGIC, 1)
    # kpemu reads the same note (it is what QEMU would enter), and still boots.
    assert m.image.pvh_entry == _symbol(elf, "pvh_start_xen")["st_value"] - START_KERNEL_MAP
    assert m.boot().reason == "boot"
    assert m.console.startswith("toykernel: ")
