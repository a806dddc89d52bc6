"""A section header whose sh_offset points far past the end of the file (the section name
table's, here) made pyelftools raise `OverflowError: Python int too large to convert to C
ssize_t` from a seek deep inside the library.  The raw section headers are now checked
against the file's size before pyelftools reads them (emu.elfcheck)."""

import pytest

from emu import ImageError, Machine
from tests.machine.regress.elf_patch import patched, set_section_field


@pytest.mark.parametrize("name", [".shstrtab", ".symtab", ".text"])
def test_section_past_the_end_is_truncation(tmp_path, image_path, name):
    bad = patched(image_path, tmp_path / "vmlinux",
                  lambda b: set_section_field(b, name, "sh_offset", 1 << 63))
    with pytest.raises(ImageError) as info:
        Machine(bad)
    assert str(info.value).startswith(f"{bad}: truncated: section ")
    assert "past the file's" in str(info.value)


def test_section_name_outside_the_name_table(tmp_path, image_path):
    def far_name(blob):
        from tests.machine.regress.elf_patch import section_header
        offset, _sec = section_header(blob, ".text")
        blob[offset:offset + 4] = (0xFFFFFF00).to_bytes(4, "little")
    bad = patched(image_path, tmp_path / "vmlinux", far_name)
    with pytest.raises(ImageError, match="name at 0xffffff00 is outside the section name "
                                         "table"):
        Machine(bad)
