"""Every unusable image is refused with one clear message naming the problem."""

import struct

import pytest

from emu import ImageError, Machine


def variant(tmp_path, image_path, name, patch):
    data = bytearray(image_path.read_bytes())
    data = patch(data)
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def _set(offset, fmt, value):
    def patch(data):
        struct.pack_into(fmt, data, offset, value)
        return data
    return patch


CASES = [
    ("missing", None, "no such file"),
    ("text.txt", lambda d: bytearray(b"just some text\n"), "not an ELF file"),
    ("elf32", _set(4, "B", 1), "ELF class ELF32, kpemu boots ELF64 images only"),
    ("aarch64", _set(18, "<H", 183), "ELF for machine EM_AARCH64, kpemu emulates x86_64"),
    ("relocatable", _set(16, "<H", 1), "ELF type ET_REL, a kernel image must be an executable"),
    ("truncated", lambda d: d[:len(d) // 3], "truncated: a segment ends at byte"),
    ("tiny", lambda d: d[:40], "truncated ELF header (40 bytes)"),
]


@pytest.mark.parametrize("name, patch, message", CASES, ids=[c[0] for c in CASES])
def test_bad_image_is_refused(tmp_path, image_path, name, patch, message):
    path = tmp_path / name if patch is None else variant(tmp_path, image_path, name, patch)
    with pytest.raises(ImageError) as info:
        Machine(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        Machine(tmp_path)
