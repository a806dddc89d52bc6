"""A note whose n_namesz or n_descsz ran past its PT_NOTE segment was read by pyelftools
with the size its header stated: an n_namesz of 60 MB cost a 60 MB allocation (read(n)
allocates n bytes up front), and the garbage note was accepted (found by the fuzz
campaign's memory bound).  The notes are walked and checked before pyelftools reads them."""

import io
import struct
import tracemalloc

import pytest
from elftools.elf.elffile import ELFFile

from emu import ImageError, Machine
from tests.machine.regress.elf_patch import patched


def first_note(blob):
    elf = ELFFile(io.BytesIO(bytes(blob)))
    return next(seg["p_offset"] for seg in elf.iter_segments() if seg["p_type"] == "PT_NOTE")


@pytest.mark.parametrize("field, offset", [("n_namesz", 0), ("n_descsz", 4)])
def test_oversized_note_is_refused_unread(tmp_path, image_path, field, offset):
    bad = patched(image_path, tmp_path / "vmlinux",
                  lambda b: struct.pack_into("<I", b, first_note(b) + offset, 60 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as info:
            Machine(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert str(info.value).startswith(f"{bad}: malformed ELF: the note at ")
    assert "runs past its segment's end" in str(info.value)
