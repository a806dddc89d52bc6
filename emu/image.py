"""Kernel images: an ELF64 x86_64 executable read with pyelftools, its loadable segments,
entry points, symbol table, asm-offsets constants and PVH note; and the boot information
(a PVH hvm_start_info) kpemu hands the kernel in %rsi.

Every problem with the file becomes one ImageError naming it (missing, not ELF, another
class or machine, not an executable, truncated); ELFError never escapes.

Must not import: unicorn, kprobes.
"""

import os
import struct
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from emu.errors import ImageError

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

    def symbol_value(self, name):
        for sym in self.symbols:
            if sym.name == name and sym.section != "ABS":
                return sym.value
        raise ImageError(f"{self.path}: no symbol {name}")


def load_image(path):
    """Read and check a kernel image; raise ImageError with the reason if it is unusable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not a kernel image")
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}") from None
    if blob[:4] != b"\x7fELF":
        raise ImageError(f"{path}: not an ELF file")
    if len(blob) < 64:
        raise ImageError(f"{path}: truncated ELF header ({len(blob)} bytes)")
    if blob[4] != 2:
        raise ImageError(f"{path}: ELF class {'ELF32' if blob[4] == 1 else blob[4]}, "
                         "kpemu boots ELF64 images only")
    try:
        return _parse(path, blob)
    except ELFError as exc:
        raise ImageError(f"{path}: malformed ELF: {exc}") from None
    except (struct.error, ValueError, IndexError) as exc:
        raise ImageError(f"{path}: malformed or truncated ELF ({exc})") from None


def _parse(path, blob):
    import io

    elf = ELFFile(io.BytesIO(blob))
    if elf["e_machine"] != "EM_X86_64":
        raise ImageError(f"{path}: ELF for machine {elf['e_machine']}, kpemu emulates x86_64")
    if elf["e_type"] != "ET_EXEC":
        raise ImageError(f"{path}: ELF type {elf['e_type']}, a kernel image must be an "
                         "executable (ET_EXEC); load relocatable objects with load_module")
    segments = []
    pvh_entry = None
    for seg in elf.iter_segments():
        end = seg["p_offset"] + seg["p_filesz"]
        if seg["p_type"] in ("PT_LOAD", "PT_NOTE") and end > len(blob):
            raise ImageError(f"{path}: truncated: a segment ends at byte {end:#x} "
                             f"but the file has {len(blob):#x} bytes")
        if seg["p_type"] == "PT_LOAD":
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
    for sec in elf.iter_sections():
        if sec["sh_flags"] & SH_FLAGS.SHF_ALLOC:
            sections[sec.name] = (sec["sh_addr"], sec["sh_size"], sec["sh_flags"])
            if sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and sec["sh_size"]:
                text_ranges.append((sec["sh_addr"], sec["sh_addr"] + sec["sh_size"]))
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None:
        raise ImageError(f"{path}: no symbol table (kpemu needs an unstripped image)")
    symbols = []
    constants = {}
    for sym in symtab.iter_symbols():
        if not sym.name:
            continue
        info = sym["st_info"]
        shndx = sym["st_shndx"]
        if info["type"] in ("STT_FILE", "STT_SECTION"):
            continue
        if shndx == "SHN_ABS":
            constants[sym.name] = sym["st_value"]
            symbols.append(ElfSymbol(sym.name, sym["st_value"], sym["st_size"], info["type"],
                                     info["bind"], "ABS", False))
            continue
        if not isinstance(shndx, int):
            continue
        sec = elf.get_section(shndx)
        symbols.append(ElfSymbol(sym.name, sym["st_value"], sym["st_size"], info["type"],
                                 info["bind"], sec.name,
                                 bool(sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR)))
    return KernelImage(path, elf["e_entry"], segments, symbols, constants, text_ranges,
                       sections, pvh_entry)


def build_boot_info(cmdline):
    """(paddr, bytes) pieces of a PVH hvm_start_info with `cmdline`, as QEMU's PVH loader
    builds it: magic, version 1, no modules, the command line's physical address."""
    raw = cmdline.encode() + b"\0"
    if len(raw) > CMDLINE_MAX:
        raise ImageError(f"kernel command line too long ({len(raw) - 1} > {CMDLINE_MAX - 1})")
    info = struct.pack("<IIIIQQQQII", HVM_START_MAGIC, 1, 0, 0, 0, CMDLINE_PADDR, 0, 0, 0, 0)
    return [(BOOTINFO_PADDR, info), (CMDLINE_PADDR, raw)]
