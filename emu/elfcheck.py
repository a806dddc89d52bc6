"""What kpemu checks in an ELF64 file before pyelftools reads it; shared by the image loader
(emu.image) and the module loader (emu.modules).

pyelftools trusts every offset, size and index in the file: a section past the end of the
file, a name outside the string table or an entry size of 0 surface as OverflowError,
ZeroDivisionError, AttributeError... from inside the library, or as a read of gigabytes.
These checks run on the raw headers first, the way Linux's elf_validity_check()
(kernel/module/main.c) checks a module before trusting it, and each names the field that is
wrong.  They also bound the work: a file is read only if it is a regular file no larger
than the caller's limit, and a symbol table only up to MAX_SYMBOLS entries.

The caller passes `fail(message, errno)`, which returns the exception to raise (an
ImageError or a ModuleLoadError naming the file), so the wording here is shared and the
error type stays the caller's.

Must not import: unicorn, kprobes.
"""

import errno
import os
import stat
import struct

ELF_MAGIC = b"\x7fELF"
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR_SIZE = 56
# p_type, p_offset and p_filesz of one program header, the rest skipped
PHDR_EXTENT = struct.Struct("<I4xQ16xQ16x")
PT_NOTE = 4
NHDR = struct.Struct("<III")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")

SHT_STRTAB = 3
SHT_NOBITS = 8
SHN_XINDEX = 0xFFFF

# A kernel image has a few dozen sections and a module built with -ffunction-sections some
# thousands; more than 65536 (what e_shnum can count without the extended numbering) is not
# a file kpemu can use, and refusing it keeps a forged count from costing minutes.
MAX_SECTIONS = 1 << 16
# A distribution's vmlinux has a few hundred thousand .symtab entries; ten times as many is
# still accepted.  Past it the table is refused before it is read (each entry becomes a
# Python object, so the bound is one of memory too).
MAX_SYMBOLS = 1 << 21


def size_text(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def open_regular(path, what, fail):
    """Open `path` for reading if it is a regular file: returns (binary file, size).  A
    device (/dev/zero), a FIFO or a socket is refused before any byte is read -- it may
    never end.  O_NONBLOCK keeps the open of a FIFO with no writer from blocking.  `what`
    names the kind of file in messages ("kernel image", "module")."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise fail("no such file", errno.ENOENT) from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}", exc.errno) from None
    try:
        st = os.fstat(fd)
        # Like kernel_read_file(), which reads regular files only (EINVAL).
        if stat.S_ISDIR(st.st_mode):
            raise fail("is a directory, not a regular file", errno.EINVAL)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"not a regular file (a device, FIFO or socket cannot be a {what})",
                       errno.EINVAL)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f, st.st_size


def check_size(f, size, limit, what, fail):
    """Refuse a file of more than `limit` bytes, naming the limit -- or, when its first
    bytes are not even ELF's magic, saying that instead (a 2 GB file of zeros is "not an
    ELF file", a 2 GB ELF file is too large)."""
    if size <= limit:
        return
    if read_at(f, 0, 4) != ELF_MAGIC:
        raise fail("not an ELF file", errno.ENOEXEC)
    raise fail(f"{size_text(size)} is larger than the {size_text(limit)} kpemu accepts for "
               f"a {what}", errno.EFBIG)


def read_at(f, offset, size):
    f.seek(offset)
    return f.read(size)


def check_headers(f, size, fail):
    """Check the ELF64 header's tables and every section header against the file's `size`
    bytes; returns the raw section headers (tuples in SHDR order: sh_name, sh_type,
    sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize).

    The caller has checked the magic, the class and that the file holds a whole header."""
    (_ident, _type, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize,
     phnum, shentsize, shnum, shstrndx) = EHDR.unpack(read_at(f, 0, EHDR.size))
    bad = lambda what: fail(f"malformed ELF: {what}", errno.ENOEXEC)   # noqa: E731
    if phnum:
        if phentsize != PHDR_SIZE:
            raise bad(f"program header size {phentsize} (ELF64: {PHDR_SIZE})")
        if phoff + phnum * PHDR_SIZE > size:
            raise fail(f"truncated: program headers end at {phoff + phnum * PHDR_SIZE:#x} "
                       f"past the file's {size:#x} bytes", errno.ENOEXEC)
        table = read_at(f, phoff, phnum * PHDR_SIZE)
        for p_type, p_offset, p_filesz in PHDR_EXTENT.iter_unpack(table):
            if p_offset + p_filesz > size:
                raise fail(f"truncated: a segment ends at byte {p_offset + p_filesz:#x} but "
                           f"the file has {size:#x} bytes", errno.ENOEXEC)
            if p_type == PT_NOTE:
                check_notes(f, p_offset, p_filesz, fail)
    if shoff == 0:
        return []                    # no section header table (pyelftools: no sections)
    if shentsize != SHDR.size:
        raise bad(f"section header size {shentsize} (ELF64: {SHDR.size})")
    if shoff + SHDR.size > size:
        raise fail(f"truncated: section headers start at {shoff:#x} past the file's "
                   f"{size:#x} bytes", errno.ENOEXEC)
    first = SHDR.unpack(read_at(f, shoff, SHDR.size))
    if shnum == 0:
        shnum = first[5]             # extended numbering: the count is section 0's sh_size
    if shstrndx == SHN_XINDEX:
        shstrndx = first[6]          # ... and the name table's index its sh_link
    if not 0 < shnum <= MAX_SECTIONS:
        raise bad(f"{shnum} sections (kpemu reads 1 to {MAX_SECTIONS})")
    if shoff + shnum * SHDR.size > size:
        raise fail(f"truncated: section headers end past the file's {size:#x} bytes",
                   errno.ENOEXEC)
    table = read_at(f, shoff, shnum * SHDR.size)
    sections = [SHDR.unpack_from(table, i * SHDR.size) for i in range(shnum)]
    for i, sec in enumerate(sections):
        sh_type, sh_offset, sh_size = sec[1], sec[4], sec[5]
        if sh_type != SHT_NOBITS and sh_offset + sh_size > size:
            raise fail(f"truncated: section {i} ends at {sh_offset + sh_size:#x} past the "
                       f"file's {size:#x} bytes", errno.ENOEXEC)
    if not 0 < shstrndx < shnum:
        raise bad(f"section name table index {shstrndx} not in 1..{shnum - 1}")
    names = sections[shstrndx]
    check_string_table(f, names, "section name table", fail)
    for i, sec in enumerate(sections):
        if sec[0] >= names[5]:
            raise bad(f"section {i}'s name at {sec[0]:#x} is outside the section name "
                      f"table ({names[5]:#x} bytes)")
    return sections


def check_notes(f, offset, size, fail):
    """Every note of the note segment at `offset` must end inside it: pyelftools reads a
    note's name and descriptor with the sizes its header states, and read(n) allocates n
    bytes before it finds the file shorter.  Walks the notes as pyelftools' iter_notes()
    does (a header of three words, the name and the descriptor each padded to 4 bytes)."""
    end = offset + size
    pos = offset
    while pos + NHDR.size < end:
        namesz, descsz, _type = NHDR.unpack(read_at(f, pos, NHDR.size))
        desc_end = pos + NHDR.size + (namesz + 3 & ~3) + descsz
        if desc_end > end:
            raise fail(f"malformed ELF: the note at {pos:#x} (name {namesz:#x} bytes, "
                       f"descriptor {descsz:#x}) runs past its segment's end at {end:#x}",
                       errno.ENOEXEC)
        pos = pos + NHDR.size + (namesz + 3 & ~3) + (descsz + 3 & ~3)


def check_string_table(f, sec, what, fail):
    """A string table must be one, hold something and end with a NUL (gABI), so no string
    read from it runs past its end."""
    if sec[1] != SHT_STRTAB:
        raise fail(f"malformed ELF: {what} is not a string table (type {sec[1]})",
                   errno.ENOEXEC)
    if sec[5] == 0 or read_at(f, sec[4] + sec[5] - 1, 1) != b"\0":
        raise fail(f"malformed ELF: {what} does not end with a NUL", errno.ENOEXEC)


def check_symtab(f, sections, index, fail):
    """Check the symbol table at section `index`: ELF64 entries, at most MAX_SYMBOLS of
    them, a string table for their names and every name inside it."""
    sec = sections[index]
    bad = lambda what: fail(f"malformed ELF: {what}", errno.ENOEXEC)   # noqa: E731
    sh_offset, sh_size, sh_link, sh_entsize = sec[4], sec[5], sec[6], sec[9]
    if sh_entsize != SYM.size or sh_size % SYM.size:
        raise bad(f"symbol table entry size {sh_entsize}, size {sh_size:#x} (ELF64 "
                  f"entries are {SYM.size} bytes)")
    count = sh_size // SYM.size
    if count > MAX_SYMBOLS:
        raise fail(f"{count} symbols, more than the {MAX_SYMBOLS} kpemu reads",
                   errno.ENOEXEC)
    if not 0 < sh_link < len(sections):
        raise bad(f"symbol table's string table index {sh_link} not in "
                  f"1..{len(sections) - 1}")
    strtab = sections[sh_link]
    check_string_table(f, strtab, "symbol string table", fail)
    raw = read_at(f, sh_offset, sh_size)
    for i, (st_name, *_rest) in enumerate(SYM.iter_unpack(raw)):
        if st_name >= strtab[5]:
            raise bad(f"symbol {i}'s name at {st_name:#x} is outside its string table "
                      f"({strtab[5]:#x} bytes)")
