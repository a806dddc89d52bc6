"""A PT_LOAD whose p_filesz exceeds its p_memsz made Machine() fail with `ValueError:
negative count` while zero-filling the rest of the segment (found by a single-byte mutation
of the image).  The image loader refuses the segment instead, naming both sizes."""

import pytest

from emu import ImageError, Machine
from tests.machine.regress.elf_patch import patched, set_segment_field


def test_segment_with_more_file_than_memory_is_an_image_error(tmp_path, image_path):
    bad = patched(image_path, tmp_path / "vmlinux",
                  lambda b: set_segment_field(b, 0, "p_memsz", 0x10))
    with pytest.raises(ImageError) as info:
        Machine(bad)
    assert str(info.value).startswith(f"{bad}: malformed ELF: a segment at ")
    assert "bytes of file in 0x10 bytes of memory" in str(info.value)
