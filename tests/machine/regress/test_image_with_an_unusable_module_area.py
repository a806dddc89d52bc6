"""An image whose __module_area_end was below its __module_area_start failed with
"module area exhausted: no 64 bytes ..." (m.call's landing pad could not be placed), and one
whose module area its page tables do not map with "cannot write guest memory": neither
named the image or what is wrong with it.  Both are ImageErrors saying so."""

import struct

import pytest

from emu import ImageError, Machine
from emu.memory import START_KERNEL_MAP
from tests.machine.regress.elf_patch import patched, symbol_offset


def set_symbol(name, value):
    def patch(blob):
        at = symbol_offset(blob, lambda s: s.name == name)
        struct.pack_into("<Q", blob, at + 8, value)
    return patch


def test_empty_module_area(tmp_path, image_path):
    bad = patched(image_path, tmp_path / "vmlinux", set_symbol("__module_area_end", 0))
    with pytest.raises(ImageError, match=r": empty module area \(__module_area_start "
                                         r"0xffffffff8[0-9a-f]+, __module_area_end 0x0\)$"):
        Machine(bad)


def test_module_area_outside_the_page_tables(tmp_path, image_path):
    bad = patched(image_path, tmp_path / "vmlinux",
                  set_symbol("__module_area_start", START_KERNEL_MAP - 0x1000))
    with pytest.raises(ImageError, match=r": its page tables do not map the module area "
                                         r"0xffffffff7ffff000-"):
        Machine(bad)
