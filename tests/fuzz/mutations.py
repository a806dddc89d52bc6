"""Mutations for the fuzz campaign, as plain data and pure functions (no hypothesis here):
the strategies in tests/fuzz/strategies.py draw these operations, and anything that wants to
replay an input (a regression test, a bug report) applies the same list by hand.

ELF files are mutated where their meaning is: `elf64_fields` names every header field the
loaders trust (ELF header, program and section headers, symbols, relocations, notes) with
its offset and width, and `interesting_values` gives the values that break a careless
reader (0, all ones, the file's length, sign boundaries, off-by-one of the current value,
the special section indices).  Random bytes rarely get past the ELF magic; a field set to
the file's length gets past every check that forgets one bound.

Probe definitions are mutated as words of the kprobe_events language: a word is replaced,
doubled, cut or joined with one taken from a dictionary of the language's own pieces.
"""

import struct
from dataclasses import dataclass

ELF64_EHDR = 64
ELF64_PHDR = 56
ELF64_SHDR = 64
ELF64_SYM = 24
ELF64_RELA = 24

SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_NOTE = 7
PT_NOTE = 4


@dataclass(frozen=True)
class Field:
    name: str        # e.g. "shdr[3].sh_offset", for reports
    offset: int      # in the file
    size: int        # bytes: 1, 2, 4 or 8 (little-endian)

    @property
    def in_header(self):
        """A field of the ELF header or of a program or section header (not of an entry
        of a symbol table, relocation section or note)."""
        return self.name.startswith(("e_", "phdr[", "shdr[")) and ".note[" not in self.name


_EHDR = [("e_ident[EI_CLASS]", 4, 1), ("e_ident[EI_DATA]", 5, 1),
         ("e_ident[EI_VERSION]", 6, 1), ("e_type", 16, 2), ("e_machine", 18, 2),
         ("e_version", 20, 4), ("e_entry", 24, 8), ("e_phoff", 32, 8), ("e_shoff", 40, 8),
         ("e_flags", 48, 4), ("e_ehsize", 52, 2), ("e_phentsize", 54, 2), ("e_phnum", 56, 2),
         ("e_shentsize", 58, 2), ("e_shnum", 60, 2), ("e_shstrndx", 62, 2)]
_PHDR = [("p_type", 0, 4), ("p_flags", 4, 4), ("p_offset", 8, 8), ("p_vaddr", 16, 8),
         ("p_paddr", 24, 8), ("p_filesz", 32, 8), ("p_memsz", 40, 8), ("p_align", 48, 8)]
_SHDR = [("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 8), ("sh_addr", 16, 8),
         ("sh_offset", 24, 8), ("sh_size", 32, 8), ("sh_link", 40, 4), ("sh_info", 44, 4),
         ("sh_addralign", 48, 8), ("sh_entsize", 56, 8)]
_SYM = [("st_name", 0, 4), ("st_info", 4, 1), ("st_other", 5, 1), ("st_shndx", 6, 2),
        ("st_value", 8, 8), ("st_size", 16, 8)]
_RELA = [("r_offset", 0, 8), ("r_type", 8, 4), ("r_sym", 12, 4), ("r_addend", 16, 8)]
_NHDR = [("n_namesz", 0, 4), ("n_descsz", 4, 4), ("n_type", 8, 4)]

# Per table, at most this many entries get their fields named: the first ones and then
# every k-th (a guard against a huge seed; the committed ones are far below it).
_MAX_ENTRIES = 4096


def _spread(count):
    if count <= _MAX_ENTRIES:
        return range(count)
    step = count // _MAX_ENTRIES + 1
    return sorted(set(range(8)) | set(range(8, count, step)))


def _table(prefix, base, entsize, count, layout, blob_len):
    out = []
    for i in _spread(count):
        start = base + i * entsize
        if start + entsize > blob_len:
            break
        out += [Field(f"{prefix}[{i}].{name}", start + off, size) for name, off, size in layout]
    return out


def elf64_fields(blob):
    """Every field a loader reads from the (valid, little-endian ELF64) file `blob`."""
    fields = [Field(name, off, size) for name, off, size in _EHDR]
    phoff, shoff = struct.unpack_from("<QQ", blob, 32)
    phnum, shnum = struct.unpack_from("<H", blob, 56)[0], struct.unpack_from("<H", blob, 60)[0]
    fields += _table("phdr", phoff, ELF64_PHDR, phnum, _PHDR, len(blob))
    fields += _table("shdr", shoff, ELF64_SHDR, shnum, _SHDR, len(blob))
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", blob, phoff + i * ELF64_PHDR)
        if p_type == PT_NOTE:
            fields += _notes(f"phdr[{i}].note", blob, p_offset, p_filesz)
    for i in range(shnum):
        (sh_type, _flags, _addr, sh_offset, sh_size, _link, _info, _align,
         _entsize) = struct.unpack_from("<IQQQQIIQQ", blob, shoff + i * ELF64_SHDR + 4)
        if sh_type == SHT_SYMTAB:
            fields += _table(f"sym@{i}", sh_offset, ELF64_SYM, sh_size // ELF64_SYM, _SYM,
                             len(blob))
        elif sh_type == SHT_RELA:
            fields += _table(f"rela@{i}", sh_offset, ELF64_RELA, sh_size // ELF64_RELA,
                             _RELA, len(blob))
        elif sh_type == SHT_NOTE:
            fields += _notes(f"shdr[{i}].note", blob, sh_offset, sh_size)
    return fields


def _notes(prefix, blob, offset, size):
    out = []
    pos, end = offset, min(offset + size, len(blob))
    n = 0
    while pos + 12 <= end:
        namesz, descsz, _type = struct.unpack_from("<III", blob, pos)
        out += [Field(f"{prefix}[{n}].{name}", pos + off, sz) for name, off, sz in _NHDR]
        pos += 12 + (namesz + 3 & ~3) + (descsz + 3 & ~3)
        n += 1
    return out


def elf64_boundaries(blob):
    """File offsets where a structure starts or ends: truncating there cuts a table or a
    section exactly, which a reader that checks only starts misses."""
    cuts = {0, 4, 16, ELF64_EHDR - 1, ELF64_EHDR, len(blob) - 1}
    phoff, shoff = struct.unpack_from("<QQ", blob, 32)
    phnum, shnum = struct.unpack_from("<H", blob, 56)[0], struct.unpack_from("<H", blob, 60)[0]
    cuts |= {phoff, phoff + phnum * ELF64_PHDR, shoff, shoff + shnum * ELF64_SHDR}
    for i in range(shnum):
        sh_offset, sh_size = struct.unpack_from("<QQ", blob, shoff + i * ELF64_SHDR + 24)
        cuts |= {sh_offset, sh_offset + sh_size, sh_offset + sh_size - 1}
    for i in range(phnum):
        p_offset, _va, _pa, p_filesz = struct.unpack_from("<QQQQ", blob,
                                                          phoff + i * ELF64_PHDR + 8)
        cuts |= {p_offset, p_offset + p_filesz - 1}
    return sorted(c for c in cuts if 0 <= c < len(blob))


def interesting_values(field, current, blob_len):
    """Values for `field` (now `current`) that sit on some reader's boundary."""
    bits = 8 * field.size
    top = (1 << bits) - 1
    vals = {0, 1, 2, 3, 4, 7, 8, 0x10, 0x40, 0x7F, 0x80, 0xFF, top, top - 1,
            top >> 1, (top >> 1) + 1, blob_len, blob_len - 1, blob_len + 1, blob_len // 2,
            current + 1, current - 1, current + 8, current - 8, current * 2, current ^ 0x80,
            current + blob_len, 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF, 0x10000, 0x7FFFFFFF,
            0x80000000, 0xFFFFFFFF, 0x100000000, 1 << 63, (1 << 64) - 1}
    return sorted(v & top for v in vals)


def read_field(blob, field):
    return int.from_bytes(blob[field.offset:field.offset + field.size], "little")


# -- operations: tuples, so an input can be printed, stored and replayed --------------------

def apply(seed, ops):
    """The bytes `ops` make of `seed`.  Each op is one of
      ("set", offset, size, value)   a little-endian field written
      ("xor", pos, mask)             one byte's bits flipped
      ("truncate", length)
      ("zero", pos, n)               n bytes cleared
      ("insert", pos, data)
      ("delete", pos, n)
      ("copy", src, dst, n)          n bytes of the file copied over another place
    Positions past the end are taken modulo the current length, so any op applies to any file.
    """
    data = bytearray(seed)
    for op in ops:
        kind = op[0]
        n = max(len(data), 1)
        if kind == "set":
            _, off, size, value = op
            if off + size <= len(data):
                data[off:off + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
        elif kind == "xor":
            _, pos, mask = op
            if data:
                data[pos % n] ^= mask
        elif kind == "truncate":
            del data[op[1]:]
        elif kind == "zero":
            _, pos, count = op
            pos %= n
            data[pos:pos + count] = bytes(len(data[pos:pos + count]))
        elif kind == "insert":
            _, pos, blob = op
            data[pos % (len(data) + 1):pos % (len(data) + 1)] = blob
        elif kind == "delete":
            _, pos, count = op
            del data[pos % n:pos % n + count]
        elif kind == "copy":
            _, src, dst, count = op
            piece = bytes(data[src % n:src % n + count])
            dst %= n
            data[dst:dst + len(piece)] = piece
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return bytes(data)


# -- probe definitions ----------------------------------------------------------------------

# Pieces of the kprobe_events language (Documentation/trace/kprobetrace.rst), each a word or
# the part of one that a parser splits on.
DEFINITION_WORDS = [
    "p", "r", "-", "p:", "r:", "-:", "r10:", "r4096:", "r4097:", "r0:", "p1:", "kprobes/",
    "grp/", "/", ":", "myprobe", "my.probe", "1bad", "_", "a" * 64, "a" * 65,
    "do_fork", "do_fork+4", "do_fork+0", "do_fork+0x1000", "fib", "fib+1", "sys_mkdir",
    "printk", "schedule", "jiffies", "kretprobe_trampoline", "_text", "nosuch",
    "0xffffffff81000000", "0xffffffff81000001", "0", "0x0", "-1", "+", "%",
    "%ax", "%di", "%si", "%dx", "%cx", "%r8", "%r15", "%ip", "%sp", "%flags", "%bogus", "%",
    "$retval", "$stack", "$stack0", "$stack1", "$stack99999999", "$arg1", "$arg6", "$arg0",
    "$arg999", "$comm", "$current", "$", "@jiffies", "@jiffies+8", "@0xffffffff81000000",
    "@", "+0(", "-8(", "+0(%di)", "+8(+0(%si))", "(", ")", "((", "))", "+u0(%di)", "+18446744073709551615(%sp)",
    ":u8", ":u16", ":u32", ":u64", ":s8", ":s16", ":s32", ":s64", ":x8", ":x16", ":x32",
    ":x64", ":string", ":ustring", ":symbol", ":b4@0/32", ":b65@0/64", ":b1@63/64", ":u32[4]",
    ":u8[0]", ":u8[65]", ":string[2]", ":bogus", "[", "]", "=", "arg=", "x=%di", "\\x00",
    '"', '"str"', "\\", "#", "#comment", "\t", " ", "  ", "\n", "18446744073709551616",
    "0x" + "f" * 17, "9" * 30, "é", "\u202e", "\x00", "\x7f",
]
