"""Kernel images: an ELF64 x86_64 executable read with pyelftools, its loadable segments,
entry points, symbol table, asm-offsets constants and PVH note; and the boot information
(a PVH hvm_start_info) kpemu hands the kernel in %rsi.

Every problem with the file becomes one ImageError naming it (missing, not a regular file,
over IMAGE_MAX_SIZE, not ELF, another class or machine, not an executable, truncated, a
header field pointing outside the file); emu.elfcheck checks the raw headers before
pyelftools reads them, so ELFError and the library's internal errors never escape.

Must not import: unicorn, kprobes.
"""

import os
import struct
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_ST_INFO_BIND, ENUM_ST_INFO_TYPE, ENUM_ST_SHNDX

from emu import elfcheck
from emu.errors import ImageError

# Far above any kernel image kpemu can boot: the loadable part must fit the machine's
# 128 MiB of RAM, and a Linux vmlinux is some 50-60 MB without debug info, several hundred MB
# with it.  The file is streamed, never read whole, so the limit bounds the work, not memory.
IMAGE_MAX_SIZE = 1 << 30

XEN_ELFNOTE_PHYS32_ENTRY = 18
HVM_START_MAGIC = 0x336EC578
BOOTINFO_PADDR = 0x7000
CMDLINE_PADDR = 0x7100
CMDLINE_MAX = 0x700


@dataclass
class Segment:
    paddr: int
    vaddr: int
    data: bytes
    memsz: int
    flags: int


@dataclass
class ElfSymbol:
    name: str
    value: int
    size: int
    kind: str      # STT_FUNC, STT_OBJECT, STT_NOTYPE, ...
    bind: str      # STB_GLOBAL, STB_LOCAL, STB_WEAK
    section: str   # section name, or "ABS"
    executable: bool


@dataclass
class KernelImage:
    path: str
    entry: int
    segments: list
    symbols: list            # ElfSymbol, every named symbol of .symtab
    constants: dict          # absolute symbols: the asm-offsets layout exports
    text_ranges: list        # (start, end) of executable sections
    sections: dict = field(default_factory=dict)   # name -> (addr, size, flags)
    pvh_entry: int = None

    def const(self, name):
        try:
            return self.constants[name]
        except KeyError:
            raise ImageError(f"{self.path}: the image does not export {name} "
                             "(asm-offsets symbol missing)") from None

    def read(self, vaddr, size):
        """`size` bytes at link address `vaddr` as the file holds them (zeros past a
        segment's file data), or None outside every segment."""
        for seg in self.segments:
            if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.memsz:
                off = vaddr - seg.vaddr
                return seg.data[off:off + size].ljust(size, b"\0")
        return None

    def symbol_value(self, name):
        for sym in self.symbols:
            if sym.name == name and sym.section != "ABS":
                return sym.value
        raise ImageError(f"{self.path}: no symbol {name}")


# Parsed images, by the file's identity (device, inode, size, modification time) and the RAM
# size checked against: a Machine() of an image already read costs no second parse (a
# lesson or a test boots several machines of one image).  An Image is never modified.
_PARSED = {}
_PARSED_MAX = 8


def load_image(path, ram_size=None):
    """Read and check a kernel image (or take the one read before from the same unchanged
    file); raise ImageError with the reason if it is unusable."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return _load_image(path, ram_size)      # _load_image reports why
    key = (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, ram_size)
    image = _PARSED.get(key)
    if image is None:
        image = _load_image(path, ram_size)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = image
    return image


def _load_image(path, ram_size=None):
    """Read and check a kernel image; raise ImageError with the reason if it is unusable.

    The file is never read whole: after the header and the raw section headers are checked
    (emu.elfcheck), pyelftools reads from the open file only the program headers, the
    loadable segments (each checked to lie in the file and, with `ram_size`, to fit in
    guest RAM before it is read), the notes and the symbol table."""
    path = os.fspath(path)

    def fail(message, _errno=None):
        return ImageError(f"{path}: {message}")

    f, size = elfcheck.open_regular(path, "kernel image", fail)
    with f:
        try:
            head = f.read(64)
        except OSError as exc:
            raise fail(f"cannot read: {exc.strerror}") from None
        if head[:4] != b"\x7fELF":
            raise fail("not an ELF file")
        if len(head) < 64:
            raise fail(f"truncated ELF header ({len(head)} bytes)")
        if head[4] != 2:
            raise fail(f"ELF class {'ELF32' if head[4] == 1 else head[4]}, "
                       "kpemu boots ELF64 images only")
        if head[5] != 1:
            raise fail("big-endian ELF, kpemu boots little-endian x86_64 images only")
        elfcheck.check_size(f, size, IMAGE_MAX_SIZE, "kernel image", fail)
        try:
            sections = elfcheck.check_headers(f, size, fail)
            return _parse(path, f, sections, ram_size, fail)
        except ELFError as exc:
            raise fail(f"malformed ELF: {exc}") from None
        except OSError as exc:
            raise fail(f"cannot read: {exc.strerror}") from None


def _parse(path, f, raw_sections, ram_size, fail):
    elf = ELFFile(f)
    if elf["e_machine"] != "EM_X86_64":
        raise ImageError(f"{path}: ELF for machine {elf['e_machine']}, kpemu emulates x86_64")
    if elf["e_type"] != "ET_EXEC":
        raise ImageError(f"{path}: ELF type {elf['e_type']}, a kernel image must be an "
                         "executable (ET_EXEC); load relocatable objects with load_module")
    segments = []
    pvh_entry = None
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD":
            if seg["p_filesz"] > seg["p_memsz"]:
                raise ImageError(f"{path}: malformed ELF: a segment at {seg['p_paddr']:#x} "
                                 f"holds {seg['p_filesz']:#x} bytes of file in "
                                 f"{seg['p_memsz']:#x} bytes of memory")
            if ram_size is not None and seg["p_paddr"] + seg["p_memsz"] > ram_size:
                raise ImageError(f"{path}: segment at {seg['p_paddr']:#x} "
                                 f"(+{seg['p_memsz']:#x}) does not fit in "
                                 f"{ram_size >> 20} MiB")
            segments.append(Segment(seg["p_paddr"], seg["p_vaddr"], seg.data(),
                                    seg["p_memsz"], seg["p_flags"]))
        elif seg["p_type"] == "PT_NOTE":
            for note in seg.iter_notes():
                if note["n_name"] == "Xen" and note["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY:
                    desc = note["n_descdata"]
                    if isinstance(desc, str):
                        desc = desc.encode("latin-1")
                    pvh_entry = int.from_bytes(desc[:4], "little")
    if not segments:
        raise ImageError(f"{path}: no loadable segments")

    sections = {}
    text_ranges = []
    symtab_index = None
    for index, sec in enumerate(elf.iter_sections()):
        if sec.name == ".symtab" and symtab_index is None:
            symtab_index = index
        if sec["sh_flags"] & SH_FLAGS.SHF_ALLOC:
            sections[sec.name] = (sec["sh_addr"], sec["sh_size"], sec["sh_flags"])
            if sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and sec["sh_size"]:
                text_ranges.append((sec["sh_addr"], sec["sh_addr"] + sec["sh_size"]))
    if symtab_index is None:
        raise ImageError(f"{path}: no symbol table (kpemu needs an unstripped image)")
    symtab = elf.get_section(symtab_index)
    if symtab["sh_type"] != "SHT_SYMTAB":
        raise ImageError(f"{path}: malformed ELF: .symtab is not a symbol table "
                         f"({symtab['sh_type']})")
    elfcheck.check_symtab(f, raw_sections, symtab_index, fail)
    symbols = []
    constants = {}
    by_index = {}      # section index -> (name, executable): parsed once, not per symbol
    for name, info_type, info_bind, shndx, value, size in _raw_symbols(f, raw_sections,
                                                                       symtab_index):
        if not name or info_type in ("STT_FILE", "STT_SECTION"):
            continue
        if shndx == "SHN_ABS":
            constants[name] = value
            symbols.append(ElfSymbol(name, value, size, info_type, info_bind, "ABS", False))
            continue
        if not isinstance(shndx, int):
            continue
        if shndx >= len(raw_sections):
            raise ImageError(f"{path}: malformed ELF: symbol {name} in section index "
                             f"{shndx} of {len(raw_sections)}")
        if shndx not in by_index:
            sec = elf.get_section(shndx)
            by_index[shndx] = (sec.name, bool(sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR))
        sec_name, executable = by_index[shndx]
        symbols.append(ElfSymbol(name, value, size, info_type, info_bind, sec_name,
                                 executable))
    return KernelImage(path, elf["e_entry"], segments, symbols, constants, text_ranges,
                       sections, pvh_entry)


def _decoding(enum):
    """value -> name of a pyelftools enum, as its parser maps them (the last name of a
    value wins; values it does not name stay numbers)."""
    return {v: k for k, v in enum.items() if k != "_default_"}


_ST_TYPE, _ST_BIND, _ST_SHNDX = (_decoding(e) for e in (ENUM_ST_INFO_TYPE, ENUM_ST_INFO_BIND,
                                                        ENUM_ST_SHNDX))


def _raw_symbols(f, raw_sections, index):
    """(name, type, bind, shndx, value, size) of every entry of the symbol table at
    section `index`, with pyelftools' names for type, bind and special section indexes:
    read as raw ELF64 entries in one pass (a Linux vmlinux has ~32,000; pyelftools' own
    iteration took seconds), after emu.elfcheck.check_symtab checked the table and every
    name's offset in its string table."""
    sec = raw_sections[index]
    strtab = raw_sections[sec[6]]
    names = elfcheck.read_at(f, strtab[4], strtab[5])
    for st_name, st_info, _other, shndx, value, size in elfcheck.SYM.iter_unpack(
            elfcheck.read_at(f, sec[4], sec[5])):
        end = names.find(b"\0", st_name)
        name = names[st_name:end if end >= 0 else len(names)].decode("latin-1")
        yield (name, _ST_TYPE.get(st_info & 0xF, st_info & 0xF),
               _ST_BIND.get(st_info >> 4, st_info >> 4), _ST_SHNDX.get(shndx, shndx),
               value, size)


def build_boot_info(cmdline, memmap=(0, 0), modules=(0, 0)):
    """(paddr, bytes) pieces of a PVH hvm_start_info with `cmdline`, as QEMU's PVH loader
    builds it: magic, version 1, the module list (`modules` = (paddr, count) of struct
    hvm_modlist_entry), the command line's physical address and the e820 map (`memmap` =
    (paddr, count) of struct hvm_memmap_table_entry)."""
    raw = cmdline.encode() + b"\0"
    if len(raw) > CMDLINE_MAX:
        raise ImageError(f"kernel command line too long ({len(raw) - 1} > {CMDLINE_MAX - 1})")
    info = struct.pack("<IIIIQQQQII", HVM_START_MAGIC, 1, 0, modules[1], modules[0],
                       CMDLINE_PADDR, 0, memmap[0], memmap[1], 0)
    return [(BOOTINFO_PADDR, info), (CMDLINE_PADDR, raw)]
