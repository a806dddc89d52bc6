"""The committed images are what their sources build, byte for byte (make images)."""

import hashlib
import shutil
import subprocess

import pytest

from emu.machine import DEFAULT_IMAGE
from kernel_images import LESSON_TARGETS

needs_toolchain = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("ld") is None or shutil.which("make") is None,
    reason="gcc, ld or make not installed: cannot rebuild the image")


def _rebuilt_matches(tmp_path, committed):
    """Build `committed`'s directory afresh in tmp_path (without its build products)."""
    build = tmp_path / committed.parent.name
    shutil.copytree(committed.parent, build, ignore=shutil.ignore_patterns(
        "*.o", "*.d", "asm-offsets.s", "generated", "vmlinux"))
    subprocess.run(["make", "-s", "-C", str(build)], check=True, capture_output=True)
    built = hashlib.sha256((build / committed.name).read_bytes()).hexdigest()
    return built == hashlib.sha256(committed.read_bytes()).hexdigest()


@needs_toolchain
def test_committed_image_matches_its_sources(tmp_path):
    assert _rebuilt_matches(tmp_path, DEFAULT_IMAGE), \
        "kernel_images/toykernel/vmlinux is stale: run `make images`"


@needs_toolchain
def test_committed_lesson_targets_match_their_source(tmp_path):
    assert _rebuilt_matches(tmp_path, LESSON_TARGETS), \
        "kernel_images/lessons/lesson_targets.o is stale: run `make images`"
