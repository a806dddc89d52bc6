"""The committed image is what its sources build, byte for byte (make images)."""

import hashlib
import shutil
import subprocess

import pytest

from emu.machine import DEFAULT_IMAGE


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ld") is None
                    or shutil.which("make") is None,
                    reason="gcc, ld or make not installed: cannot rebuild the image")
def test_committed_image_matches_its_sources(tmp_path):
    src = DEFAULT_IMAGE.parent
    build = tmp_path / "toykernel"
    shutil.copytree(src, build, ignore=shutil.ignore_patterns(
        "*.o", "*.d", "asm-offsets.s", "generated", "vmlinux"))
    subprocess.run(["make", "-s", "-C", str(build)], check=True, capture_output=True)
    built = hashlib.sha256((build / "vmlinux").read_bytes()).hexdigest()
    committed = hashlib.sha256(DEFAULT_IMAGE.read_bytes()).hexdigest()
    assert built == committed, "kernel_images/toykernel/vmlinux is stale: run `make images`"
