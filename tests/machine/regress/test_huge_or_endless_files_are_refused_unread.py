"""A 2 GB sparse file cost 2.1 GB of RAM to be told "not an ELF file", and /dev/zero as an
image or a module never returned: both were read whole before any check.  Now a file must
be a regular one, its header is checked from a 64-byte read, and its size against a stated
limit (1 GiB for an image, which is streamed; 64 MiB for a module) -- all before the rest
is read.  The endless cases run in a subprocess so a regression fails instead of hanging."""

import os
import subprocess
import sys
import tracemalloc

import pytest

from emu import ImageError, Machine, ModuleLoadError

TWO_GB = 2 << 30


def sparse(path, head=b""):
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(TWO_GB)
    return path


def peak_mb(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


def test_sparse_2gb_of_zeros_is_not_elf_after_a_bounded_read(tmp_path, machine):
    path = sparse(tmp_path / "zeros")

    def load():
        with pytest.raises(ImageError, match=r": not an ELF file$"):
            Machine(path)
        with pytest.raises(ModuleLoadError, match=r": not an ELF file$"):
            machine.load_module(path)
    assert peak_mb(load) < 8


def test_sparse_2gb_elf_files_are_over_the_stated_limits(tmp_path, image_path, machine,
                                                         probe_targets_o):
    image = sparse(tmp_path / "vmlinux", image_path.read_bytes()[:4096])
    module = sparse(tmp_path / "big.o", probe_targets_o.read_bytes()[:4096])
    messages = []

    def load():
        with pytest.raises(ImageError) as info:
            Machine(image)
        messages.append(str(info.value))
        with pytest.raises(ModuleLoadError) as info:
            machine.load_module(module)
        messages.append(str(info.value))
    assert peak_mb(load) < 8
    assert messages == [
        f"{image}: 2 GiB is larger than the 1 GiB kpemu accepts for a kernel image",
        f"{module}: 2 GiB is larger than the 64 MiB kpemu accepts for a module"]


ENDLESS = r"""
import sys
from emu import KpemuError, Machine
try:
    if sys.argv[1] == "image":
        Machine("/dev/zero")
    else:
        Machine().load_module("/dev/zero")
except KpemuError as exc:
    print(exc)
"""


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
@pytest.mark.parametrize("kind", ["image", "module"])
def test_dev_zero_is_refused_at_once(kind):
    r = subprocess.run([sys.executable, "-c", ENDLESS, kind], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("/dev/zero: not a regular file (a device, FIFO or socket cannot be "
                        f"a {'kernel image' if kind == 'image' else 'module'})\n")
