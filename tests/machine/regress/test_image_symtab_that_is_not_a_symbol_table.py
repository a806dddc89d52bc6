"""A .symtab whose sh_type is not SHT_SYMTAB made the loader fail with `AttributeError:
'Section' object has no attribute 'iter_symbols'`; one whose entry size or string table is
wrong made pyelftools read names from anywhere in the file.  Both are image errors now."""

import pytest

from emu import ImageError, Machine
from tests.machine.regress.elf_patch import patched, set_section_field

SHT_PROGBITS = 1


def test_symtab_of_another_type_is_refused(tmp_path, image_path):
    bad = patched(image_path, tmp_path / "vmlinux",
                  lambda b: set_section_field(b, ".symtab", "sh_type", SHT_PROGBITS))
    with pytest.raises(ImageError, match=r": malformed ELF: \.symtab is not a symbol table "
                                         r"\(SHT_PROGBITS\)$"):
        Machine(bad)


def test_symtab_entry_size_is_checked(tmp_path, image_path):
    bad = patched(image_path, tmp_path / "vmlinux",
                  lambda b: set_section_field(b, ".symtab", "sh_entsize", 0))
    with pytest.raises(ImageError, match=r": malformed ELF: .*'\.symtab'"):
        Machine(bad)


def test_symbol_name_outside_its_string_table(tmp_path, image_path):
    from tests.machine.regress.elf_patch import symbol_offset

    def far(blob):
        at = symbol_offset(blob, lambda s: s.name == "do_fork")
        blob[at:at + 4] = (0x7FFFFFFF).to_bytes(4, "little")
    bad = patched(image_path, tmp_path / "vmlinux", far)
    with pytest.raises(ImageError, match="name at 0x7fffffff is outside its string table"):
        Machine(bad)
