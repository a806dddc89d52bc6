"""The kpemu pytest plugin (entry point `pytest11: kpemu`; `-p no:kpemu` turns it off).

Fixtures:
  machine        an emu.Machine booted to the start of the workload (the toy kernel's, or
                 with the Linux image, Linux booted to where init is about to run), fresh
                 for every test:
                 the plugin boots one machine per session and configuration (image, cmdline,
                 modules), snapshots it, and restores that snapshot for each test
                 (emu/snapshot.py: milliseconds, not a boot);
  kprobes        a Kprobes installed on that machine; at teardown everything the test left
                 registered is unregistered, and the kernel's and the modules' text must be
                 byte for byte what was loaded (a difference is an error naming the address);
  kprobe_events  the kprobe_events language: add(definition) defines and enables an event,
                 records(name) returns its hits in order, typed.
Marker `@pytest.mark.kpemu(image=, cmdline=, modules=[...], kretprobe_design=)` configures
them for a test, a class or a module (the closest marker wins, key by key); options
--kpemu-image, --kpemu-cmdline and --kpemu-design do it for a whole run.  A failed test that
used `machine` gets report sections: the console's last lines, the kprobes list, the last
trace records, the oops, and where the guest is.

Under pytest-xdist each worker is its own process and boots its own machine once.

Reaches the machine only through emu.Machine's public methods.  Must not import: unicorn.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from emu import Machine
from emu.machine import DEFAULT_IMAGE
from kprobes.core import Kprobes
from kprobes.events import KprobeEvents, ProbeSyntaxError
from kprobes.kretprobe import DESIGNS

MARKER_KEYS = ("image", "cmdline", "modules", "kretprobe_design")
CONSOLE_LINES = 20
TRACE_LINES = 20

_MACHINES = pytest.StashKey()      # config: {configuration key: _Booted}
_USED = pytest.StashKey()          # item: what the test's fixtures set up (_Used)


@dataclass
class _Booted:
    """One configuration's machine, its after-boot snapshot and its text as loaded."""
    machine: object
    snapshot: object
    text: list                     # (start address, bytes) of every text range


@dataclass
class _Used:
    booted: _Booted
    kprobes: object = None
    events: object = None


# -- configuration --------------------------------------------------------------------------


def pytest_addoption(parser):
    group = parser.getgroup("kpemu", "kpemu: a fresh booted emulated kernel per test")
    group.addoption("--kpemu-image", metavar="PATH", default=None,
                    help="kernel image the machine fixture boots (default: the toy kernel)")
    group.addoption("--kpemu-cmdline", metavar="STR", default=None,
                    help="kernel command line for the machine fixture")
    group.addoption("--kpemu-design", choices=DESIGNS, default=None,
                    help="kretprobe design of the kprobes fixture: task (2.6.13, default) "
                         "or stack (the June 2005 original)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "kpemu(image=None, cmdline=None, modules=(), kretprobe_design=None): "
        "the machine, kprobes and kprobe_events fixtures of these tests use this kernel "
        "image, command line, modules (relocatable .o files, loaded after boot) and "
        "kretprobe design")
    config.stash[_MACHINES] = {}


def _settings(request):
    """(image, cmdline, modules, design) for this test: marker, then option, then default.
    Relative paths in a marker are relative to the test file, in an option to the
    directory pytest was started in."""
    config = request.config
    found = {}
    base = Path(request.node.path).parent
    for mark in reversed(list(request.node.iter_markers("kpemu"))):
        if mark.args:
            raise pytest.UsageError("@pytest.mark.kpemu takes keyword arguments only "
                                    f"({', '.join(MARKER_KEYS)})")
        unknown = sorted(set(mark.kwargs) - set(MARKER_KEYS))
        if unknown:
            raise pytest.UsageError(f"@pytest.mark.kpemu: unknown argument "
                                    f"{', '.join(unknown)} (known: {', '.join(MARKER_KEYS)})")
        found.update(mark.kwargs)
    invoked = Path(config.invocation_params.dir)
    if found.get("image") is not None:
        image = base / found["image"]
    elif config.getoption("kpemu_image"):
        image = invoked / config.getoption("kpemu_image")
    else:
        image = DEFAULT_IMAGE
    cmdline = found.get("cmdline")
    if cmdline is None:
        cmdline = config.getoption("kpemu_cmdline")     # None: the image's default
    modules = found.get("modules") or ()
    if isinstance(modules, (str, os.PathLike)):
        modules = (modules,)
    modules = tuple(str((base / mod).resolve()) for mod in modules)
    design = found.get("kretprobe_design") or config.getoption("kpemu_design") or "task"
    if design not in DESIGNS:
        raise pytest.UsageError(f"@pytest.mark.kpemu: kretprobe_design must be one of "
                                f"{', '.join(DESIGNS)}, not {design!r}")
    return str(Path(image).resolve()), cmdline, modules, design


def _boot(image, cmdline, modules):
    m = Machine(image, cmdline=cmdline)
    m.boot()
    for path in modules:
        m.load_module(path)
    ranges = list(m.image.text_ranges) + [r for mod in m.loaded_modules()
                                          for r in mod.text_ranges]
    text = [(a, m.read(a, b - a)) for a, b in ranges]
    return _Booted(m, m.snapshot(), text)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def machine(request):
    """An emu.Machine booted to the start of the workload, restored fresh for this test."""
    image, cmdline, modules, _design = _settings(request)
    machines = request.config.stash[_MACHINES]
    key = (image, cmdline, modules)
    booted = machines.get(key)
    if booted is None:
        booted = machines[key] = _boot(image, cmdline, modules)
    else:
        booted.machine.restore(booted.snapshot)
    request.node.stash[_USED] = _Used(booted)
    return booted.machine


@pytest.fixture
def kprobes(machine, request):
    """The Kprobes installed on `machine`; what the test leaves registered is unregistered
    at teardown, and the text must then be the text as loaded."""
    _image, _cmdline, _modules, design = _settings(request)
    k = Kprobes(machine, kretprobe_design=design)
    used = request.node.stash[_USED]
    used.kprobes = k
    yield k
    for p in k.probes():
        rp = getattr(p, "kretprobe", None)
        if rp is not None:
            if rp.registered:
                k.unregister_kretprobe(rp)
        elif p.registered:
            k.unregister_kprobe(p)
    _check_text(machine, k, used.booted.text)


def _check_text(m, k, text):
    """Every text byte is what was loaded, but for the breakpoints kprobes itself keeps (the
    kretprobe trampoline's)."""
    own = {a for a in k.armed if k.table[a].internal}
    for start, loaded in text:
        now = m.read(start, len(loaded))
        if now == loaded:
            continue
        for i, (was, byte) in enumerate(zip(loaded, now)):
            if was != byte and start + i not in own:
                addr = start + i
                pytest.fail(f"kpemu: the kernel text at {addr:#x} ({m.symbols.format(addr)}) "
                            f"is {byte:#04x}, not the image's {was:#04x}, after the test's "
                            "probes were unregistered", pytrace=False)


class Record:
    """One trace record: an attribute per fetch argument (int for integer types, str for
    string and symbol types, None for a fault), plus comm, pid, cpu, timestamp (the guest
    clock in ns, as the trace's timestamp counts), ip (the place as the trace prints it:
    `sym+0xoff/0xsize`, for a return `caller+0x../0x.. <- func`) and text (the trace line)."""

    def __init__(self, rec):
        self.event = rec.event
        self.comm = rec.comm
        self.pid = rec.pid
        self.cpu = 0
        self.timestamp = rec.clock
        self.ip = rec.ip_text
        self.text = rec.text()
        self.values = dict(rec.values)
        for name, value in rec.values.items():
            setattr(self, name, value)

    def __repr__(self):
        return f"<Record {self.text.strip()}>"


class KprobeEventsFixture:
    """The kprobe_events language inside a test (`events`: the KprobeEvents itself)."""

    def __init__(self, k):
        self.events = KprobeEvents(k)

    def add(self, definition):
        """Define the event and enable it; a bad definition raises ProbeSyntaxError whose
        message is the kernel's error_log entry, caret under the offending character."""
        try:
            tp = self.events.command(definition)
        except ProbeSyntaxError as err:
            err.args = (err.format(),)
            raise
        if tp is None:
            return None
        self.events.enable(tp.event.name)
        return tp.event

    def records(self, name=None):
        """The hits of event `name` ("EVENT" or "GROUP/EVENT"; every event for None), in
        order."""
        event = None if name is None else name.rpartition("/")[2]
        return [Record(r) for r in self.events.buffer if event is None or r.event == event]

    def trace(self):
        return self.events.trace()


@pytest.fixture
def kprobe_events(kprobes, request):
    """kprobe_events on the `kprobes` fixture: add(definition), records(name)."""
    events = KprobeEventsFixture(kprobes)
    request.node.stash[_USED].events = events
    return events


# -- failure reports ------------------------------------------------------------------------


def _sections(used):
    m = used.booted.machine
    lines = m.console.splitlines()
    out = [("console", "\n".join(lines[-CONSOLE_LINES:]) or "(nothing printed)")]
    if used.kprobes is not None:
        out.append(("kprobes", used.kprobes.list() or "(no probe registered)"))
    if used.events is not None:
        trace = used.events.events.trace_lines()
        out.append(("trace", "\n".join(trace[-TRACE_LINES:]) or "(no record)"))
    if m.oops is not None:
        out.append(("oops", m.oops.format()))
    try:
        task = str(m.current) if m.current else "?"
    except Exception:                     # noqa: BLE001 - a report must not fail
        task = "?"
    state = (f"powered off, exit code {m.exit_code}" if m.halted else
             "stopped by an oops" if m.oops is not None else "stopped, can run on")
    out.append(("location", f"ip {m.symbols.format(m.engine.reg('ip'))}, task {task}, "
                            f"clock {m.clock.now} ({state})"))
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    used = item.stash.get(_USED, None)
    if used is None or not report.failed or report.when != "call":
        return
    for title, text in _sections(used):
        report.sections.append((f"kpemu {title}", text))
