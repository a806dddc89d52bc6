"""Fuzz the image loader: structured mutations of the committed image
(kernel_images/toykernel/vmlinux), each built into a Machine, booted and run a little.

Every input ends in a clean kpemu error -- an ImageError naming the file for what the file
gets wrong, or a machine-layer error for a guest that cannot go on -- or in a run that
stopped for one of the documented reasons."""

import pytest
from hypothesis import given

from emu import ImageError, Machine
from emu.machine import DEFAULT_IMAGE
from tests.fuzz import mutations as mu
from tests.fuzz import strategies as fs
from tests.fuzz.harness import fuzz_settings, run_input

SEED = DEFAULT_IMAGE.read_bytes()
BOOT_INSNS = 30_000        # the image's boot takes some 12,500 instructions
RUN_INSNS = 20_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-image")


def boot(path):
    m = Machine(path)
    result = m.boot(max_insns=BOOT_INSNS)
    if result.reason == "boot":
        result = m.run(max_insns=RUN_INSNS)
    assert result.reason in ("halt", "limit", "oops", "boot"), result
    return result


def test_the_seed_boots(workdir):
    path = workdir / "seed"
    path.write_bytes(SEED)
    assert boot(path).reason == "limit"


@fuzz_settings("image")
@given(ops=fs.elf_ops(SEED))
def test_image_loader(workdir, ops):
    path = workdir / "vmlinux"
    path.write_bytes(mu.apply(SEED, ops))
    outcome = run_input("image", lambda: boot(path))
    if isinstance(outcome, ImageError):
        assert str(outcome).startswith(f"{path}: ")
