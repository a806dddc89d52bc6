"""`kpemu boot --compare-qemu`: with the real QEMU (skipped when it is not installed), and
with QEMU missing or replaced by a fake on PATH, so the verdicts and exit statuses are
tested everywhere."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from emu.qemu import qemu_argv, run_kpemu
from emu.machine import DEFAULT_IMAGE

ROOT = Path(__file__).resolve().parents[2]
no_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                             reason="qemu-system-x86_64 not installed")


def kpemu(*args, path=None):
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = str(path)
    return subprocess.run([sys.executable, "-m", "kprobes", *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=600)


@pytest.mark.qemu
@no_qemu
@pytest.mark.parametrize("cmdline", ["", "hz=20000"])
def test_compare_qemu_agrees(cmdline):
    args = ["boot", "--compare-qemu"] + (["--cmdline", cmdline] if cmdline else [])
    proc = kpemu(*args)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    console, verdict = out.rsplit("\n", 2)[0], out.splitlines()[-1]
    m, _ = run_kpemu(cmdline=cmdline)
    assert console + "\n" == m.console
    jiffies = int(m.console.split("jiffies ")[1].split(",")[0])
    assert verdict == (f"kpemu: QEMU icount agrees: {len(m.uart.output)} bytes, "
                       f"{len(m.console.splitlines())} lines identical, exit code 0, "
                       f"ticks {jiffies}")


def test_compare_qemu_without_qemu_exits_2(tmp_path):
    proc = kpemu("boot", "--compare-qemu", path=tmp_path)     # an empty PATH directory
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert proc.stderr.decode() == ("kpemu: qemu-system-x86_64 not installed (not found on "
                                    "PATH): cannot run the image under QEMU\n")


@pytest.fixture(scope="module")
def default_console():
    m, result = run_kpemu()
    assert result.reason == "halt" and m.exit_code == 0
    return bytes(m.uart.output)


def fake_qemu(directory, console, status):
    """A qemu-system-x86_64 that records its argv and prints SeaBIOS-like firmware output
    followed by `console`, then exits with `status`."""
    (directory / "console").write_bytes(console)
    script = directory / "qemu-system-x86_64"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        with open({str(directory / 'argv.json')!r}, "w") as f:
            json.dump(sys.argv[1:], f)
        assert sys.stdin.read() == ""          # stdin is closed
        with open({str(directory / 'console')!r}, "rb") as f:
            body = f.read()
        sys.stdout.buffer.write(b"\\x1bc\\x1b[?7l\\x1b[2J\\x1b[0mSeaBIOS (fake)\\r\\n"
                                b"Booting from ROM.." + body)
        sys.exit({status})
        """))
    script.chmod(0o755)
    return directory


def test_compare_qemu_reports_the_first_differing_line(tmp_path, default_console):
    lines = default_console.splitlines(keepends=True)
    lines[4] = lines[4].replace(b"hello", b"hellO")
    fake_qemu(tmp_path, b"".join(lines), 1)
    proc = kpemu("boot", "--compare-qemu", path=tmp_path)
    assert proc.returncode == 1, proc.stderr.decode()
    out = proc.stdout.decode().splitlines()
    assert out[-3:] == ["kpemu: QEMU differs at line 5:",
                        "  kpemu: mkdir: hello through sys_write",
                        "  qemu:  mkdir: hellO through sys_write"]
    # QEMU was started with exactly the documented command line.
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert ["qemu-system-x86_64"] + argv == qemu_argv(DEFAULT_IMAGE, "")
    assert argv == ["-accel", "tcg", "-nographic", "-no-reboot", "-net", "none",
                    "-icount", "shift=0,sleep=off",
                    "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                    "-kernel", str(DEFAULT_IMAGE), "-append", ""]


def test_compare_qemu_reports_a_missing_last_line(tmp_path, default_console):
    lines = default_console.splitlines(keepends=True)
    fake_qemu(tmp_path, b"".join(lines[:-1]), 1)
    proc = kpemu("boot", "--compare-qemu", "--quiet", path=tmp_path)
    assert proc.returncode == 1
    out = proc.stdout.decode().splitlines()
    assert out[0] == f"kpemu: QEMU differs at line {len(lines)}:"
    assert out[1] == "  kpemu: " + lines[-1].decode().rstrip("\n")
    assert out[2] == "  qemu:  <end of output>"


def test_compare_qemu_reports_a_different_exit_code(tmp_path, default_console):
    fake_qemu(tmp_path, default_console, 3)           # the guest wrote 1
    proc = kpemu("boot", "--compare-qemu", "--quiet", path=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.decode().splitlines() == [
        f"kpemu: QEMU differs at the end ({len(default_console)} bytes identical):",
        "  kpemu: exit code 0",
        "  qemu:  exit code 1"]


def test_compare_qemu_agreeing_fake(tmp_path, default_console):
    fake_qemu(tmp_path, default_console, 1)
    proc = kpemu("boot", "--compare-qemu", path=tmp_path)
    assert proc.returncode == 0
    out = proc.stdout
    assert out.startswith(default_console)
    assert out[len(default_console):].decode().startswith("kpemu: QEMU icount agrees: ")
