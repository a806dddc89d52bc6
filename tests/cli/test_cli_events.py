"""`kpemu boot -e ...` and `kpemu events --check`, end to end in a subprocess."""

import json

from tests.cli.test_cli import kpemu


def test_boot_with_events_prints_console_trace_and_profile(reference_run):
    r = kpemu("boot", "-e", "p:mk sys_mkdir path=+0(%di):string",
              "-e", "r:mkret sys_mkdir ret=$retval:s64", "-e", "r2:fr fib $retval:u32")
    assert r.returncode == 0, r.stderr
    console, _, rest = r.stdout.partition("# tracer: nop\n")
    assert console == reference_run["console"]
    mk = [ln for ln in rest.splitlines() if ": mk: " in ln]
    assert len(mk) == 4 and mk[0].endswith('path="/tmp"')
    rets = [ln.split(") ", 1)[1] for ln in rest.splitlines() if ": mkret: " in ln]
    assert rets == ["ret=0", "ret=0", "ret=0", "ret=-17"]
    profile = rest.split("# kprobe_profile\n")[1].splitlines()
    assert profile[0].split() == ["mk", "4", "0"] and profile[1].split() == ["mkret", "4", "0"]
    name, hits, missed = profile[2].split()
    assert name == "fr" and int(hits) + int(missed) == 18694
    assert profile[3] == "# misses: explained below"
    assert profile[4] == (f"#   fr: {missed} missed: {missed} no free instance "
                          "(raise MAXACTIVE: r<N>:...)")
    assert r.stderr.startswith("kpemu: powered off with exit code 0")


def test_events_file_and_json(tmp_path):
    defs = tmp_path / "probes.txt"
    defs.write_text("# probes for the mkdir task\np:mk sys_mkdir path=+0(%di):string\n\n"
                    "r:gp sys_getpid ret=$retval:s32\n")
    r = kpemu("boot", "--events-file", str(defs), "--format", "json")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert records[0]["type"] == "console" and "init: 7 tasks exited" in records[0]["text"]
    trace = [x for x in records if x["type"] == "trace"]
    # typed: a string is a JSON string, a number a JSON number (issue 11)
    assert [x["args"]["path"] for x in trace if x["event"] == "mk"] == [
        "/tmp", "/home", "/var", "/tmp"]
    assert {x["comm"] for x in trace if x["event"] == "gp"} == {"mkdir", "exec"}
    assert all(isinstance(x["args"]["ret"], int) for x in trace if x["event"] == "gp")
    assert all(x["flags"] == "d...." and x["cpu"] == 0 for x in trace)
    profile = {x["event"]: (x["hits"], x["misses"]) for x in records if x["type"] == "profile"}
    assert profile == {"kprobes/mk": (4, 0), "kprobes/gp": (2, 0)}
    assert records[-1] == {"type": "buffer", "size_kb": 1408, "entries": 6, "written": 6,
                           "overrun": 0}


def test_bad_definition_prints_error_log_and_exits_2():
    r = kpemu("boot", "-e", "p:ok fib", "-e", "p:bad sys_mkdir+2 x=%ax")
    assert r.returncode == 2
    assert r.stdout == ""                     # refused before the guest printed anything
    assert r.stderr == ("trace_kprobe: error: Probe point is not an instruction boundary\n"
                        "  Command: p:bad sys_mkdir+2 x=%ax\n"
                        "                 ^\n")
    r = kpemu("boot", "-e", "p:kprobes/a fib x=%nosuchreg")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "trace_kprobe: error: Invalid register name"
    assert lines[2].index("^") - 11 == lines[1].index("%nosuchreg") - len("  Command: ")


def test_events_check():
    r = kpemu("events", "--check", "p:x fib n=%di:s32", "--check", "r:y do_fork")
    assert (r.returncode, r.stdout) == (0, "p:kprobes/x fib n=%di:s32\nr:kprobes/y do_fork\n")
    r = kpemu("events", "--check", "r:y do_fork+3")
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == ("trace_kprobe: error: Retprobe address must be an "
                                        "function entry")
    r = kpemu("events", "--check", "p:z fib", "--image", "/no/such/image")
    assert (r.returncode, r.stderr) == (2, "kpemu: /no/such/image: no such file\n")


def test_a_refused_probe_says_why():
    """Regression: the CLI printed only Linux's "Failed to register probe event"; the
    registration's own reason follows the error_log entry."""
    r = kpemu("boot", "-e", "p:t kretprobe_trampoline")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "trace_kprobe: error: Failed to register probe event",
        "  Command: p:t kretprobe_trampoline", "               ^",
        "kpemu: kretprobe_trampoline+0x0/0xf: blacklisted (kretprobe_trampoline) (EINVAL)"]
    r = kpemu("boot", "-e", "p:j jiffies")
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == ("kpemu: jiffies+0x0/0x8: not in kernel or module "
                                         "text (EINVAL)")
