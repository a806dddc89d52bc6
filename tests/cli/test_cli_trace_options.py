"""`kpemu boot` trace options: --stream, --buffer-size-kb, and what --compare-qemu refuses."""

import json

import pytest

from tests.cli.test_cli import kpemu

MKDIR = "p:mk sys_mkdir path=+0(%di):string"


def test_stream_prints_records_as_they_happen(reference_run):
    whole = kpemu("boot", "-e", MKDIR)
    streamed = kpemu("boot", "--stream", "-e", MKDIR)
    assert streamed.returncode == whole.returncode == 0
    trace = [ln for ln in whole.stdout.splitlines() if ": mk: " in ln]
    lines = streamed.stdout.splitlines()
    assert [ln for ln in lines if ": mk: " in ln] == trace
    console = [ln for ln in lines if ": mk: " not in ln]
    profile = console.index("# kprobe_profile")
    # whole console lines, the trace lines between them, the profile after; no trace file
    assert "\n".join(console[:profile]) + "\n" == reference_run["console"]
    assert "# tracer: nop" not in streamed.stdout
    first = lines.index(trace[0])
    assert 0 < first < profile - 1 and lines.index(trace[-1]) < profile


def test_stream_json():
    r = kpemu("boot", "--stream", "--format", "json", "-e", MKDIR)
    records = [json.loads(ln) for ln in r.stdout.splitlines()]
    kinds = [x["type"] for x in records]
    assert kinds[:4] == ["trace"] * 4 and kinds[4] == "console"
    assert [x["args"]["path"] for x in records[:4]] == ["/tmp", "/home", "/var", "/tmp"]


def test_a_small_buffer_loses_the_oldest_and_says_so():
    r = kpemu("boot", "--buffer-size-kb", "4", "-e", "p:f fib n=%di:s32")
    assert r.returncode == 0
    header = next(ln for ln in r.stdout.splitlines() if "entries-in-buffer" in ln)
    entries, written = header.split(": ")[1].split()[0].split("/")
    profile = next(ln for ln in r.stdout.split("# kprobe_profile\n")[1].splitlines())
    assert int(written) == int(profile.split()[1])       # every hit was written
    assert 0 < int(entries) < int(written)
    assert len([ln for ln in r.stdout.splitlines() if ": f: " in ln]) == int(entries)


@pytest.mark.parametrize("args, named", [
    (("-e", "p:x fib"), "-e/--event"),
    (("--module", "x.o"), "--module"),
    (("--format", "json"), "--format json"),
    (("--stream",), "--stream"),
    (("--buffer-size-kb", "8"), "--buffer-size-kb"),
])
def test_compare_qemu_refuses_what_it_cannot_honour(args, named):
    r = kpemu("boot", "--compare-qemu", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == (f"kpemu: --compare-qemu compares the unprobed image with QEMU and "
                        f"cannot take {named}\n")
