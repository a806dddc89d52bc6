"""emu.qemu's pieces that need no QEMU: the command line, the exit-status decoding, the
firmware/kernel cut, the first-difference search and the budget's PM timer reading."""

import ast
from pathlib import Path

from emu.qemu import (decode_status, first_difference, parse_jiffies, pm_timer_port, qemu_argv,
                      split_firmware, unwrap_pm_timer)

ROOT = Path(__file__).resolve().parents[2]
SEABIOS = b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from ROM.."


def test_emu_qemu_imports_neither_unicorn_nor_kprobes():
    tree = ast.parse((ROOT / "emu" / "qemu.py").read_text())
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not [m for m in mods if m.split(".")[0] in ("unicorn", "kprobes")]


def test_the_matching_command_line():
    assert " ".join(qemu_argv("IMAGE", "CMDLINE")) == (
        "qemu-system-x86_64 -accel tcg -nographic -no-reboot -net none -icount "
        "shift=0,sleep=off -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel IMAGE "
        "-append CMDLINE")
    assert qemu_argv("v", "hz=1 x")[-1] == "hz=1 x"      # one argument, not split


def test_exit_status_decoding():
    assert decode_status(1) == 0
    assert decode_status(3) == 1
    assert decode_status(255) == 0x7f                    # the guest's die()
    assert decode_status(0) is None                      # QEMU quit on its own (e.g. -no-reboot)
    assert decode_status(2) is None
    assert decode_status(-9) is None                     # killed
    assert decode_status(None) is None


def test_firmware_cut_at_the_known_first_line():
    kernel = b"toykernel: hi\nsecond\n"
    assert split_firmware(SEABIOS + kernel, b"toykernel: hi\n") == (SEABIOS, kernel)
    # without the first line: after SeaBIOS's last words
    assert split_firmware(SEABIOS + kernel) == (SEABIOS, kernel)
    # the known line is absent (the kernel printed something else first): the fallback
    assert split_firmware(SEABIOS + b"oops\n", b"toykernel: hi\n") == (SEABIOS, b"oops\n")
    # no firmware at all
    assert split_firmware(kernel, b"toykernel: hi\n") == (b"", kernel)
    assert split_firmware(b"odd output") == (b"", b"odd output")


def test_first_difference():
    assert first_difference(b"a\nb\n", b"a\nb\n") is None
    assert first_difference(b"a\nb\nc\n", b"a\nB\nc\n") == (2, b"b\n", b"B\n")
    assert first_difference(b"a\nb\n", b"a\n") == (2, b"b\n", None)
    assert first_difference(b"a\n", b"a\nb\n") == (2, None, b"b\n")
    assert first_difference(b"a\nb", b"a\nb\n") == (2, b"b", b"b\n")   # a missing newline


def test_parse_jiffies():
    line = b"init: 7 tasks exited, 0 failed, jiffies 29, context switches 45\n"
    assert parse_jiffies(b"x\n" + line) == 29
    assert parse_jiffies(b"no summary\n") is None


def test_a_qemu_that_does_not_power_off_is_killed_and_its_output_kept(tmp_path):
    import time

    from emu.qemu import run_qemu

    (tmp_path / "output").write_bytes(SEABIOS + b"toykernel: hi\n")
    fake = tmp_path / "qemu-system-x86_64"         # a shell script: it prints at once
    fake.write_text(f"#!/bin/sh\ncat '{tmp_path / 'output'}'\nexec sleep 60\n")
    fake.chmod(0o755)
    start = time.monotonic()
    q = run_qemu("IMAGE", "", timeout=0.5, qemu=str(fake))
    assert time.monotonic() - start < 30
    assert q.timed_out and q.status is None and q.exit_code is None
    assert q.console == b"toykernel: hi\n" and q.firmware == SEABIOS


FLATVIEWS = """\
FlatView #1
 AS "I/O", root: io
 Root memory region: io
  0000000000000600-0000000000000603 (prio 0, i/o): acpi-evt
  0000000000000608-000000000000060b (prio 0, i/o): acpi-tmr
  000000000000ae00-000000000000ae17 (prio 0, i/o): acpi-pci-hotplug
FlatView #2
 AS "memory", root: system
 Root memory region: system
  00000000fed00000-00000000fed003ff (prio 0, i/o): acpi-tmr
"""


def test_pm_timer_port_from_the_flat_views():
    assert pm_timer_port(FLATVIEWS) == 0x608
    # before the firmware enables ACPI the I/O view has no timer; other views do not count
    assert pm_timer_port(FLATVIEWS.replace("0608-000000000000060b (prio 0, i/o): acpi-tmr",
                                           "0700-000000000000073f (prio 0, i/o): pm-smbus")) \
        is None


def test_pm_timer_unwrap():
    span = 1 << 24
    assert unwrap_pm_timer(0, 5, 0) == 5
    assert unwrap_pm_timer(100, 200, 0) == 200
    assert unwrap_pm_timer(span - 10, 3, 0) == span + 3              # wrapped once
    assert unwrap_pm_timer(2 * span + 7, 9, 0) == 2 * span + 9
    # a long idle warp between two readings: the instruction count says it wrapped twice
    icount = (2 * span + 50) * 10**9 // 3579545 + 1
    assert unwrap_pm_timer(span - 10, 60, icount) == 2 * span + 60
