"""Copies of a real ELF file with one header field changed, for the regression tests of
the loaders: the field is found with pyelftools, so a test names what it breaks."""

import struct

from elftools.elf.elffile import ELFFile

SHDR_FIELDS = {"sh_type": (4, "<I"), "sh_offset": (24, "<Q"), "sh_size": (32, "<Q"),
               "sh_entsize": (56, "<Q")}
PHDR_FIELDS = {"p_filesz": (32, "<Q"), "p_memsz": (40, "<Q")}
SYM_FIELDS = {"st_name": (0, "<I")}


def section_header(blob, name):
    """(file offset of the header of section `name`, the section)"""
    elf = ELFFile(__import__("io").BytesIO(bytes(blob)))
    for index, sec in enumerate(elf.iter_sections()):
        if sec.name == name:
            return elf["e_shoff"] + index * elf["e_shentsize"], sec
    raise LookupError(name)


def set_section_field(blob, name, field, value):
    offset, _sec = section_header(blob, name)
    rel, fmt = SHDR_FIELDS[field]
    struct.pack_into(fmt, blob, offset + rel, value)


def set_segment_field(blob, index, field, value):
    elf = ELFFile(__import__("io").BytesIO(bytes(blob)))
    rel, fmt = PHDR_FIELDS[field]
    struct.pack_into(fmt, blob, elf["e_phoff"] + index * elf["e_phentsize"] + rel, value)


def symbol_offset(blob, predicate):
    """File offset of the first .symtab entry for which predicate(symbol) holds."""
    _off, symtab = section_header(blob, ".symtab")
    for index, sym in enumerate(symtab.iter_symbols()):
        if index and predicate(sym):
            return symtab["sh_offset"] + index * symtab["sh_entsize"]
    raise LookupError("no such symbol")


def patched(src, dst, *patches):
    blob = bytearray(src.read_bytes())
    for patch in patches:
        patch(blob)
    dst.write_bytes(bytes(blob))
    return dst
