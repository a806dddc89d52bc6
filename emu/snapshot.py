"""Machine snapshots: everything a run depends on, taken and put back (m.snapshot(),
m.restore(snap)).

What a snapshot holds:
  * guest RAM, copy-on-write (emu/cow.py): taking a snapshot copies RAM once into a memfd
    and makes guest RAM a private view of it; restoring drops the pages written since, so
    it costs what the run changed, not the RAM size;
  * the CPU: Unicorn's context (general registers, flags, segment registers and their
    descriptor caches, GDTR/IDTR, control registers, the MSRs incl. the GS bases and
    EFER, FPU/SSE);
  * the clock: the C instruction counter (executed, deadline, stops, hidden) and the idle
    ledger;
  * the devices' host state: the UART's registers and the console so far, both 8259As,
    the 8254's channels with their phase and tick count, the RTC's registers and CMOS;
  * the host's view of the kernel: the module area's allocations, the module loader and
    its modules, kallsyms with the modules' symbols;
  * run state: booted, halted, exit code, oops, dead, IRQ count, CPU halted in hlt (and
    a Linux guest's panic in progress);
  * what other layers plugged into the machine: trap handlers by vector, hypercall
    handlers, unwind resolvers, text_originals, observers and `extensions`.  A layer
    installed after the snapshot is therefore gone after restore(), with everything it
    wrote into guest memory; its Python object is detached and must not be used again
    (install a new one).

Host layers have host state the machine cannot see into.  So a snapshot is refused while
an extension (m.extensions, e.g. "kprobes") is installed, unless it offers
`snapshot_state()` and `restore_state(state)`; a snapshot is refused inside m.call or a
handler.  The pytest plugin snapshots a booted machine with no kprobes and installs a
fresh Kprobes on each restored copy.

After a restore Unicorn's translation cache holds no block of the restored pages (every
page the run changed is dropped from the cache, or the whole cache when RAM was a view of
another snapshot) and its soft TLB is flushed.

Must not import: unicorn (the engine does), kprobes.
"""

import copy
import itertools

from emu import cow
from emu.errors import MachineError
from emu.memory import START_KERNEL_MAP

_ids = itertools.count(1)

# Machine fields that are run state (plain values, put back as they were).
_RUN_FIELDS = ("booted", "halted", "exit_code", "oops", "dead", "irqs", "cpu_halted",
               "_stop", "_fault", "_interrupted")
_ICOUNT_FIELDS = ("executed", "deadline", "stops", "hidden")
_PLAIN = (int, float, str, bytes, bool, type(None), tuple, frozenset)


def _clone(value):
    """A copy of device or loader state deep enough that later changes of the live object
    do not reach it: containers are copied, emu's own small state objects (a PIT channel,
    an 8259A) copied field by field, anything else (frozen records, an Oops, callables)
    shared."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, bytearray):
        return bytearray(value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, set):
        return set(value)
    if type(value).__module__.startswith("emu.devices") and hasattr(value, "__dict__"):
        other = copy.copy(value)
        other.__dict__.update({k: _clone(v) for k, v in vars(value).items()})
        return other
    return value


def _state(obj, skip=()):
    """The data attributes of `obj` (its callables and the components in `skip` left out)."""
    return {k: _clone(v) for k, v in vars(obj).items()
            if not callable(v) and not any(v is s for s in skip)}


def _put_state(obj, state):
    for k, v in state.items():
        setattr(obj, k, _clone(v))


class Snapshot:
    """One machine's state at one moment (opaque; m.restore(snap) puts it back).  Holds
    the RAM image (a memfd) as long as it lives."""

    def __init__(self, m):
        self.id = next(_ids)
        self.machine = m
        eng = m.engine
        self.ram = cow.RamImage(eng.ram, eng.ram_size)
        self.cpu = eng.context_save()
        self.icount = tuple(getattr(eng.icount, f) for f in _ICOUNT_FIELDS)
        self.clock = _state(m.clock, skip=(eng.icount,))
        self.devices = {name: _state(getattr(m, name))
                        for name in ("uart", "pic", "pit", "debug_exit", "rtc")}
        self.run = {f: getattr(m, f) for f in _RUN_FIELDS}
        self.kernel_map_checked = m.mem.kernel_map_checked
        area = m.module_area
        self.area = None if area is None else area.state()
        # a Linux guest's run state: the report of a panic in progress, kpemu's area
        self.guest = None if m.guest is None else (m.guest.panic_oops,
                                                   m.guest.area.allocator.state())
        # kallsyms rebinds its sorted lists when a module comes or goes and never edits
        # them in place: they are shared, its dicts copied.
        self.symbols_ref = m.symbols._syms
        self.symbols = {k: v if isinstance(v, list) else copy.copy(v)
                        for k, v in vars(m.symbols).items()}
        components = (m, m.mem, m.symbols, m.module_area, eng, m.clock, m.image)
        self.loader = None if m._modules is None else _state(m._modules, skip=components)
        self.loader_obj = m._modules
        self.plugins = {
            "trap_handlers": {v: list(fns) for v, fns in m.trap_handlers.items()},
            "hypercall_handlers": {n: list(fns) for n, fns in m.hypercall_handlers.items()},
            "unwind_resolvers": list(m.unwind_resolvers),
            "text_originals": list(m.text_originals),
            "text_freed_handlers": list(m.text_freed_handlers),
            "observers": list(m.observers),
            "extensions": dict(m.extensions),
            "out_ports": dict(eng.out_ports),
            "in_ports": dict(eng.in_ports),
        }
        self.extension_states = {name: ext.snapshot_state()
                                 for name, ext in m.extensions.items()}

    def __repr__(self):
        return f"<Snapshot {self.id} at clock {self.icount[0]}>"


def check_snapshot(m):
    """Why `m` cannot be snapshotted now (MachineError), or nothing."""
    if m.engine.nested or m.call_depth:
        raise MachineError("m.snapshot() cannot be called inside m.call() or a handler")
    for name, ext in m.extensions.items():
        if not (hasattr(ext, "snapshot_state") and hasattr(ext, "restore_state")):
            raise MachineError(
                f"m.snapshot(): {name!r} is installed on this machine and its host state "
                "(probes, instances, counters) is not part of a snapshot; take the "
                f"snapshot before installing {name}, and install a new one on the restored "
                "machine")


def take(m):
    check_snapshot(m)
    snap = Snapshot(m)
    # From now on RAM is a copy-on-write view of the snapshot: its contents do not change
    # (the memfd holds what RAM holds), so no translated block goes stale.
    cow.map_private(m.engine.ram_address, snap.ram)
    m._ram_base = snap.id
    return snap


def _flush_changed_code(m, runs):
    """Drop the translated blocks of every changed page.  Unicorn's remove_cache takes a
    virtual range and drops blocks by the physical pages behind it: use the kernel's
    linear map when it covers the page, else flush everything."""
    eng = m.engine
    walk = m.mem.walk
    for off, length in runs:
        va = START_KERNEL_MAP + off
        if walk(va) != off or walk(va + length - cow.PAGE_SIZE) != off + length - cow.PAGE_SIZE:
            eng.flush_all_code()
            return
        eng.flush_code(va, length)


def restore(m, snap):
    if not isinstance(snap, Snapshot):
        raise MachineError(f"m.restore() takes what m.snapshot() returned, not "
                           f"{type(snap).__name__}")
    if snap.machine is not m:
        raise MachineError("a snapshot can only be restored on the machine it was taken of")
    if m.engine.nested or m.call_depth:
        raise MachineError("m.restore() cannot be called inside m.call() or a handler")
    eng = m.engine
    # 1. RAM, and the translated code of what changed.
    if getattr(m, "_ram_base", None) == snap.id:
        runs = cow.changed_runs(eng.ram_address, eng.ram_size)
        _flush_changed_code(m, runs)
        cow.discard(eng.ram, runs)
    else:
        cow.map_private(eng.ram_address, snap.ram)
        m._ram_base = snap.id
        eng.flush_all_code()
    # 2. The CPU, then its TLB (page tables and CR3 may have changed under it).
    eng.context_restore(snap.cpu)
    eng.flush_tlb()
    # 3. Clock, devices, run state.
    for f, v in zip(_ICOUNT_FIELDS, snap.icount):
        setattr(eng.icount, f, v)
    _put_state(m.clock, snap.clock)
    for name, state in snap.devices.items():
        _put_state(getattr(m, name), state)
    for f, v in snap.run.items():
        setattr(m, f, v)
    m.mem.kernel_map_checked = snap.kernel_map_checked
    # 4. The host's view of the kernel.
    if snap.area is not None:
        m.module_area.set_state(snap.area)
    if m.guest is not None:
        m.guest.panic_oops, area = snap.guest
        m.guest.area.allocator.set_state(area)
    if m.symbols._syms is not snap.symbols_ref:      # rebuilt since: a module came or went
        for k, v in snap.symbols.items():
            setattr(m.symbols, k, v if isinstance(v, list) else copy.copy(v))
    m._modules = snap.loader_obj
    if snap.loader is not None:
        _put_state(snap.loader_obj, snap.loader)
    # 5. What other layers plugged in (in place: the engine's C hook holds the trap table).
    p = snap.plugins
    _replace_dict(m.trap_handlers, {v: list(fns) for v, fns in p["trap_handlers"].items()})
    _replace_dict(m.hypercall_handlers,
                  {n: list(fns) for n, fns in p["hypercall_handlers"].items()})
    for name in ("unwind_resolvers", "text_originals", "text_freed_handlers", "observers"):
        getattr(m, name)[:] = p[name]
    _replace_dict(m.extensions, p["extensions"])
    _replace_dict(eng.out_ports, p["out_ports"])
    _replace_dict(eng.in_ports, p["in_ports"])
    for name, state in snap.extension_states.items():
        m.extensions[name].restore_state(state)


def _replace_dict(d, new):
    if d != new:
        d.clear()
        d.update(new)
