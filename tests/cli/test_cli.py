"""The kpemu command line, end to end: its main() with captured streams (what a process
sees, without starting an interpreter for each case), or a real process where the process
itself is what is tested (a traceback at exit, a signal, a closed pipe)."""

import contextlib
import io
import subprocess
import sys
from types import SimpleNamespace

import pytest

from kprobes.cli import main


def _text(data):
    """What a subprocess run with text=True reads: universal newlines."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def kpemu(*args):
    """`kpemu ARGS` in this process: returncode, stdout and stderr as a subprocess's."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="", write_through=True)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args], out, err)
        except SystemExit as exc:         # argparse's --help
            code = exc.code
    return SimpleNamespace(returncode=code, stdout=_text(out.buffer.getvalue()),
                           stderr=_text(err.buffer.getvalue()))


def kpemu_process(*args, cwd=None):
    """`kpemu ARGS` as a real process (`python -m kprobes`)."""
    return subprocess.run([sys.executable, "-m", "kprobes", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_boot_prints_the_console_and_exits_with_the_guest_code(reference_run):
    r = kpemu("boot")
    assert r.returncode == 0
    assert r.stdout == reference_run["console"]
    assert r.stderr == (f"kpemu: powered off with exit code 0: "
                        f"{reference_run['executed']} instructions executed, clock "
                        f"{reference_run['clock']} ({reference_run['idle']} idle in hlt), "
                        f"{reference_run['ticks']} timer ticks\n")


def test_boot_with_a_command_line_and_a_limit():
    r = kpemu("boot", "--cmdline", "hz=20000", "--max-insns", "20000")
    assert r.returncode == 4
    assert "Command line: hz=20000\n" in r.stdout
    assert r.stderr.startswith("kpemu: stopped after 20000 instructions (--max-insns)")


def test_symbols_and_disasm():
    r = kpemu("symbols", "fib")
    assert r.returncode == 0
    addr, kind, name, size = r.stdout.split()
    assert (kind, name) == ("T", "fib") and addr.startswith("ffffffff81")
    r = kpemu("disasm", "kretprobe_trampoline")
    assert r.returncode == 0
    assert r.stdout.splitlines()[1].split() == ["kretprobe_trampoline+0x0",
                                                r.stdout.split()[0].lstrip("0") + ":",
                                                "90", "nop"]


@pytest.mark.parametrize("args, message", [
    (("boot", "/no/such/image"), "kpemu: /no/such/image: no such file\n"),
    (("boot", "--max-insns", "0"), "kpemu: argument --max-insns: must be positive: '0'\n"),
    (("disasm", "no_such_symbol"), "kpemu: no symbol 'no_such_symbol' in "),
    (("symbols", "zzz*"), "kpemu: no symbol matches 'zzz*'\n"),
    (("frobnicate",), "kpemu: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_exit_2_no_traceback(args, message):
    r = kpemu(*args)
    assert r.returncode == 2
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


def test_bad_image_kinds_from_the_cli(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    r = kpemu("boot", str(text))
    assert (r.returncode, r.stderr) == (2, f"kpemu: {text}: not an ELF file\n")


def test_debug_shows_the_traceback():
    r = kpemu_process("--debug", "boot", "/no/such/image")
    assert r.returncode != 0 and "Traceback" in r.stderr and "ImageError" in r.stderr
    r = kpemu_process("boot", "/no/such/image", "--debug")
    assert "Traceback" in r.stderr


def test_guest_oops_exit_3(tmp_path, image_path):
    # An image whose sys_getpid is ud2: the workload's mkdir task faults.
    from emu import Machine

    m = Machine()
    off = m.symbols.lookup_name("sys_getpid")
    seg = next(s for s in m.image.segments if s.vaddr <= off < s.vaddr + len(s.data))
    import io
    from elftools.elf.elffile import ELFFile
    data = bytearray(image_path.read_bytes())
    elf = ELFFile(io.BytesIO(bytes(data)))
    phdr = next(p for p in elf.iter_segments() if p["p_vaddr"] == seg.vaddr
                and p["p_type"] == "PT_LOAD")
    pos = phdr["p_offset"] + off - seg.vaddr
    data[pos:pos + 2] = b"\x0f\x0b"
    bad = tmp_path / "vmlinux-ud2"
    bad.write_bytes(bytes(data))
    r = kpemu("boot", str(bad))
    assert r.returncode == 3
    assert "kpemu: Oops: invalid opcode at sys_getpid+0x0/" in r.stderr
    assert "Call Trace:" in r.stderr and "Traceback" not in r.stderr


def test_module_on_the_command_line(tmp_path, probe_targets_o):
    r = kpemu("boot", "--quiet", "--module", str(probe_targets_o),
              "-e", "p:b mod_bump")
    assert r.returncode == 0, r.stderr
    assert "  b " in r.stdout                      # the event on module text exists


def test_module_symbols_and_a_failing_module_init_on_the_command_line(probe_targets_o,
                                                                      init_fails_o):
    r = kpemu("symbols", "mod_bump", "--module", str(probe_targets_o))
    addr, kind, name, _size, mod = r.stdout.split()
    assert r.returncode == 0 and (kind, name, mod) == ("T", "mod_bump", "[probe_targets]")
    assert addr.startswith("ffffffff812")            # the module area
    r = kpemu("boot", "--quiet", "--module", str(init_fails_o))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == (f"kpemu: {init_fails_o}: init_module of module init_fails "
                        "returned -19: No such device\n")


def test_module_with_a_bad_relocation_is_one_clear_message(tmp_path):
    import shutil
    import subprocess as sp

    if shutil.which("as") is None:
        pytest.skip("binutils 'as' not installed: cannot build the test object")
    src = tmp_path / "bad.s"
    src.write_text(".text\n.globl bad\nbad:\n  movl $fib, %eax\n  ret\n")
    obj = tmp_path / "bad.o"
    sp.run(["as", "--64", "-o", str(obj), str(src)], check=True)
    r = kpemu("boot", "--module", str(obj))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1].startswith(f"kpemu: {obj}: overflow in relocation "
                                                "type 10 (R_X86_64_32)")


def test_list_shows_registered_probes_available_functions_and_the_blacklist():
    r = kpemu("list", "-e", "p:a fib", "-e", "r:b do_fork")
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines()]
    assert [row[1:3] for row in rows] == [["k", "kretprobe_trampoline+0x0"],
                                          ["r", "do_fork+0x0"], ["k", "fib+0x0"]]
    assert all(row[-1] == "[DISABLED]" for row in rows[1:])   # events start disabled
    r = kpemu("list", "--available")
    names = r.stdout.splitlines()
    assert r.returncode == 0 and {"fib", "do_fork", "schedule"} <= set(names)
    assert "kretprobe_trampoline" not in names and "int3" not in names
    assert "_stext" not in names                                # a label, not a function
    r = kpemu("list", "--blacklist")
    entries = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert entries[0][1:] == ["kretprobe_trampoline", "(kretprobe_trampoline)"]
    assert ["int3", "(in .kprobes.text)"] in [e[1:] for e in entries]
    start, end = entries[0][0].split("-")
    assert int(end, 16) - int(start, 16) == 0xF                 # its kallsyms size
    assert not set(names) & {e[1] for e in entries}


def test_list_shows_module_functions(probe_targets_o):
    r = kpemu("list", "--available", "--module", str(probe_targets_o))
    assert "mod_fib_plus [probe_targets]" in r.stdout.splitlines()
