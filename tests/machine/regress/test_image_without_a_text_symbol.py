"""An image whose _text symbol had lost its name (st_name 0) made Machine() hand None to
Unicorn's page-table walk: `ctypes.ArgumentError: argument 2: TypeError: wrong type` (found
by the fuzz campaign).  The symbol is required like the image's other symbols."""

import pytest

from emu import ImageError, Machine
from tests.machine.regress.elf_patch import patched, symbol_offset


def test_image_without_text_is_an_image_error(tmp_path, image_path):
    def unname(blob):
        at = symbol_offset(blob, lambda s: s.name == "_text")
        blob[at:at + 4] = bytes(4)
    bad = patched(image_path, tmp_path / "vmlinux", unname)
    with pytest.raises(ImageError) as info:
        Machine(bad)
    assert str(info.value) == f"{bad}: no symbol _text"
