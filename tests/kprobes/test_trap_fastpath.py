"""The trap path's plumbing: ip and flags come from the engine's C interrupt hook and go
back to it; the pt_regs view reads and writes registers natively; the plain hit's
bookkeeping is done in C (kprobes/arch/x86_64/trap.c) and every other case by the Python
reference.  Like every kprobes test, these run on both paths (conftest.trap_path)."""

import gc
import weakref

import pytest

from emu import KpemuError, Machine
from emu.interrupts import CTrapHandler
from kprobes import Kprobe, KprobeBug, KprobeError, Kprobes
from kprobes.arch.x86_64 import _trap
from kprobes.arch.x86_64._trap import KprobeCtlblk

CROSSINGS = ("reg", "set_reg", "regs", "set_regs")
TF, IF = 0x100, 0x200


def count_crossings(engine):
    """Wrap the engine's ctypes register calls (instance attributes shadow the methods)."""
    counts = {name: 0 for name in CROSSINGS}
    for name in CROSSINGS:
        method = getattr(engine, name)

        def counted(*args, _method=method, _name=name):
            counts[_name] += 1
            return _method(*args)

        setattr(engine, name, counted)
    return counts


def test_a_hit_makes_no_register_crossing_of_its_own(km):
    m, k = km
    counts = count_crossings(m.engine)
    assert m.call("fib", 5) == 5
    unprobed = dict(counts)
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=lambda p, r: 0,
                             post_handler=lambda p, r, f: None))
    for name in CROSSINGS:
        counts[name] = 0
    assert m.call("fib", 5) == 5
    assert k.traps["int3"] == k.traps["debug"] == 15
    assert counts == unprobed


def test_registers_a_handler_reads_are_read_natively(km):
    m, k = km
    counts = count_crossings(m.engine)
    assert m.call("fib", 5) == 5
    unprobed = dict(counts)
    seen = []
    k.register_kprobe(Kprobe(symbol_name="fib",
                             pre_handler=lambda p, r: seen.append((r.di, r.rdi, r.ip)) or 0))
    for name in CROSSINGS:
        counts[name] = 0
    assert m.call("fib", 5) == 5
    fib = m.symbols.lookup_name("fib")
    # fib(5) calls fib(4), fib(3), ... depth first: the n of every call, in order.
    assert seen == [(n, n, fib + 1) for n in (5, 4, 3, 2, 1, 0, 1, 2, 1, 0, 3, 2, 1, 0, 1)]
    assert counts == unprobed


def test_a_pre_handler_that_returns_0_can_change_other_registers(km):
    m, k = km

    def pre(p, regs):
        if regs.di == 10:
            regs.di = 5
        return 0

    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=pre))
    assert m.call("fib", 10) == 5
    assert not k.arch.kcb.running


def test_a_post_handler_can_change_other_registers(km):
    m, k = km

    def post(p, regs, flags):
        if regs.di == 10:                # push %rbp was stepped: n is still in %rdi
            regs.di = 6
            regs.ax = 0xDEAD             # dead at this point of fib: no effect

    k.register_kprobe(Kprobe(symbol_name="fib", post_handler=post))
    assert m.call("fib", 10) == 8
    assert k.traps["int3"] == k.traps["debug"] == 25


def test_engine_trap_table_holds_the_c_handlers(km, trap_path):
    m, k = km
    assert m.trap_handlers is m.engine.trap_table
    assert m.trap_handlers[3][0] == k.arch.int3 and m.trap_handlers[1][0] == k.arch.debug
    assert isinstance(k.arch.int3, CTrapHandler) and k.arch.int3.owner is k.arch.kcb
    assert k.arch.fastpath == (trap_path == "c-path")


def test_plain_hits_are_handled_in_c(km, trap_path):
    m, k = km
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=lambda p, r: 0,
                             post_handler=lambda p, r, f: None))
    assert m.call("fib", 5) == 5
    assert k.arch.fast_hits == (15 if trap_path == "c-path" else 0)


def test_what_the_c_path_hands_to_python(km, resume_targets_o, trap_path):
    """Observed, disabled and stack-fixing hits take the Python path (wholly, or for the
    #DB), with the same results."""
    m, k = km
    c = trap_path == "c-path"
    m.load_module(resume_targets_o)
    log = []
    p = Kprobe(symbol_name="fib", pre_handler=lambda p, r: log.append("pre") or 0,
               post_handler=lambda p, r, f: log.append("post"))
    k.register_kprobe(p)
    events = []
    m.observers.append(events.append)            # someone watches: every trap in Python
    assert m.call("fib", 2) == 1
    assert k.arch.fast_hits == 0 and log == ["pre", "post"] * 3
    assert [e.kind for e in events].count("kprobes.trap") == 6
    m.observers.remove(events.append)
    p.disabled = True                # disabled but still armed (as an aggregate's child)
    assert m.call("fib", 2) == 1
    assert k.arch.fast_hits == 0 and p.misses["disabled"] == 3 and len(log) == 6
    p.disabled = False
    # call rel32 pushes a return address resume_execution fixes: int3 in C, #DB in Python.
    call = Kprobe(symbol_name="t_call_rel32_insn")
    k.register_kprobe(call)
    assert m.call("t_call_rel32") == 0
    assert k.arch.fast_hits == (1 if c else 0)
    assert k.traps["int3"] == k.traps["debug"] == 3 + 3 + 1
    assert not k.arch.kcb.running and k.arch.kcb.current_kprobe is None


def test_the_c_handlers_called_directly(km):
    """The trap table's entries are callable like Python handlers: int3 at fib sets up
    the single-step of the copy, the #DB after it resumes after the original."""
    m, k = km
    p = Kprobe(symbol_name="fib")
    k.register_kprobe(p)
    slot, length = p.ainsn.slot, p.ainsn.length
    assert k.arch.int3(3, p.addr + 1, 0x202) == (slot, 0x102)
    assert (k.arch.kcb.running, k.arch.kcb.status, k.arch.kcb.current_kprobe) == (True, 2, p)
    assert (k.arch.kcb.old_flags, k.arch.kcb.saved_flags) == (IF, IF)
    assert k.arch.debug(1, slot + length, 0x102) == (p.addr + length, 0x202)
    assert (k.arch.kcb.running, k.arch.kcb.status, k.arch.kcb.current_kprobe) == (False, 0, None)
    assert k.traps["int3"] == k.traps["debug"] == 1
    assert k.arch.debug(1, 0x1234, 0x102) is False          # not ours: the guest's #DB
    # No probe and no int3 there: a breakpoint removed after the CPU trapped on it.
    assert k.arch.int3(3, p.addr + 5, 0x202) == (p.addr + 4, 0x202)
    assert k.traps["int3-vanished"] == 1


def test_a_hit_takes_its_int3_out_of_the_clock(km):
    m, k = km
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=lambda p, r: 0))
    before = m.clock.hidden
    assert m.call("fib", 5) == 5
    # m.call runs frozen (its instructions are hidden too); the int3s come on top.
    unprobed = Machine()
    unprobed.boot()
    base = unprobed.clock.hidden
    assert unprobed.call("fib", 5) == 5
    assert m.clock.hidden - before == unprobed.clock.hidden - base + 15


def test_a_machine_with_kprobes_is_collected():
    """The C handlers in the trap table keep kprobes alive, visibly to the GC."""
    m = Machine()
    k = Kprobes(m)
    m.boot()
    k.register_kprobe(Kprobe(symbol_name="fib"))
    assert m.call("fib", 3) == 2
    refs = weakref.ref(m), weakref.ref(k), weakref.ref(k.arch)
    del m, k
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_an_observer_coming_and_going_inside_handlers(km, trap_path):
    """Each hit attaches or detaches an observer from its pre_handler: the hits that
    start unobserved take the C path for their int3 and Python for their #DB, the
    others Python for both -- and the guest gets the unprobed result."""
    m, k = km
    events = []

    def pre(p, regs):
        if events.append in m.observers:
            m.observers.remove(events.append)
        else:
            m.observers.append(events.append)
        return 0

    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=pre,
                             post_handler=lambda p, r, f: None))
    assert m.call("fib", 5) == 5
    assert k.traps["int3"] == k.traps["debug"] == 15
    assert k.arch.fast_hits == (8 if trap_path == "c-path" else 0)
    assert not k.arch.kcb.running and k.arch.kcb.hit_probe is None


def test_trap_entries_assert_their_precondition(km):
    """Context: trap.  Each entry (C and Python alike) checks the vector it is for and a
    consistent state, and raises KprobeBug -- never a bare RuntimeError."""
    m, k = km
    p = Kprobe(symbol_name="fib")
    k.register_kprobe(p)
    with pytest.raises(KprobeBug, match="int3 handler called for vector 1, not 3"):
        k.arch.int3(1, p.addr + 1, 0x202)
    with pytest.raises(KprobeBug, match="debug handler called for vector 3, not 1"):
        k.arch.debug(3, p.addr + 1, 0x202)
    with pytest.raises(KprobeBug, match="fault handler called for vector 3"):
        k.arch.kprobe_fault_handler(3, p.addr + 1, 0x202)
    k.arch.kcb.running = True                  # running, but no current probe
    with pytest.raises(KprobeBug, match="running=1 but current_kprobe None"):
        k.arch.int3(3, p.addr + 1, 0x202)
    k.arch.kcb.unlock()
    # An int3 while the copy is being single-stepped cannot be recovered from.
    assert k.arch.int3(3, p.addr + 1, 0x202) == (p.ainsn.slot, 0x102)
    with pytest.raises(KprobeBug, match="unrecoverable re-entry at fib"):
        k.arch.int3(3, p.addr + 1, 0x102)
    k.arch.kcb.unlock()
    with pytest.raises(KprobeBug, match="handler_raised"):   # no hit in progress
        k.arch.handler_raised("pre_handler", p, None, ValueError(), p.addr + 1, 0x202)
    assert issubclass(KprobeBug, KpemuError) and issubclass(KprobeError, KpemuError)


def test_the_slow_path_is_three_callables(km):
    """trap.c hands what it does not take to the callables the state was made with --
    nothing looked up by name (a method renamed on ArchKprobes cannot break it)."""
    m, k = km
    calls = []
    kcb = KprobeCtlblk(k.table, m.observers, m.engine.regfile, m.clock.counter,
                       lambda *a: calls.append(("int3",) + a) or False,
                       lambda *a: calls.append(("debug",) + a) or False,
                       lambda *a: calls.append(("raised",) + a[:2]) or False)
    int3 = CTrapHandler(_trap.INT3, kcb)
    debug = CTrapHandler(_trap.DEBUG, kcb)
    assert int3(3, 0x1001, 0x202) is False          # no probe at 0x1000: the slow path's
    assert debug(1, 0x1234, 0x102) is False         # not a C hit: the slow path's
    p = Kprobe(symbol_name="fib", pre_handler=lambda p, regs: 1 / 0)
    k.register_kprobe(p)
    assert int3(3, p.addr + 1, 0x202) is False      # the raise goes to the third
    assert calls == [("int3", 3, 0x1001, 0x202), ("debug", 1, 0x1234, 0x102),
                     ("raised", "pre_handler", p)]
    with pytest.raises(TypeError, match="three callables"):
        KprobeCtlblk(k.table, m.observers, m.engine.regfile, m.clock.counter, None, None,
                     None)


def test_an_aggregate_counts_a_miss_on_every_child(km):
    """kprobes_inc_nmissed_count(): the core walks the aggregate, not the arch."""
    m, k = km
    a, b = Kprobe(symbol_name="fib"), Kprobe(symbol_name="fib")
    k.register_kprobes([a, b])
    k.missed_all(k.table[a.addr], "reentered")
    assert (a.nmissed, b.nmissed) == (1, 1) and a.misses == b.misses == {"reentered": 1}


def test_what_a_hit_reads_of_a_probe_is_read_at_each_hit(km, trap_path):
    """trap.c reads a probe's handlers and flags from its slots at each hit and keeps the
    table's answer only while the table is unchanged: a handler replaced or deleted, the
    probe disabled and enabled, another probe at its address -- each is seen at the very
    next hit."""
    m, k = km
    log = []
    p = Kprobe(symbol_name="fib", pre_handler=lambda p, r: log.append("a") or 0)
    k.register_kprobe(p)
    assert m.call("fib", 1) == 1 and m.call("fib", 1) == 1 and log == ["a", "a"]
    p.pre_handler = lambda p, r: log.append("b") or 0
    p.post_handler = lambda p, r, f: log.append("post")
    assert m.call("fib", 1) == 1 and log[2:] == ["b", "post"]
    del p.post_handler              # Kprobe's class has none: the instance's was the one
    with pytest.raises(AttributeError):
        p.post_handler
    p.post_handler = None
    k.disable_kprobe(p)
    assert m.call("fib", 1) == 1 and log[4:] == []
    k.enable_kprobe(p)
    assert m.call("fib", 1) == 1 and log[4:] == ["b"]
    k.register_kprobe(Kprobe(symbol_name="sys_mkdir"))   # the table changes elsewhere
    assert m.call("fib", 1) == 1 and log[5:] == ["b"]
    k.unregister_kprobe(p)
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=lambda p, r: log.append("q") or 0))
    assert m.call("fib", 1) == 1 and log[6:] == ["q"]
    assert k.arch.fast_hits == (6 if trap_path == "c-path" else 0)


def test_a_pre_handler_that_changes_its_probe_is_seen_by_its_own_step(km, trap_path):
    """The #DB of a hit uses what its int3 read unless a handler changed something in
    between: a post_handler the pre_handler installs is called at that very step."""
    m, k = km
    log = []

    def pre(p, regs):
        p.post_handler = lambda p, r, f: log.append(("post", r.di))
        return 0

    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=pre))
    assert m.call("fib", 2) == 1
    assert log == [("post", 2), ("post", 1), ("post", 0)]


def test_a_probe_class_changed_between_hits(km, trap_path):
    """A handler the probe's class gives instead of the slot: replacing it on the class
    (which gives the type a new version tag) is seen at the next hit."""
    m, k = km
    log = []

    class ClassHandled(Kprobe):
        def pre_handler(self, p, regs):
            log.append("method")
            return 0

    p = ClassHandled(symbol_name="fib")
    del p.pre_handler               # __init__ set None on the instance: the class's now
    k.register_kprobe(p)
    assert m.call("fib", 1) == 1 and log == ["method"]
    ClassHandled.pre_handler = lambda self, p, regs: log.append("replaced") or 0
    assert m.call("fib", 1) == 1 and log == ["method", "replaced"]
    assert k.arch.fast_hits == (2 if trap_path == "c-path" else 0)


def test_a_probe_whose_handler_is_computed_is_asked_at_every_hit(km, trap_path):
    """A property for a handler may answer differently with nothing set on the probe:
    trap.c reads such an attribute by name at each hit (as it does an aggregate's
    `disabled`, its children's), not at the slot's offset."""
    m, k = km
    log = []

    class Switching(Kprobe):
        which = 0
        handlers = (lambda p, r: log.append(0) or 0, lambda p, r: log.append(1) or 0)

        @property
        def pre_handler(self):
            return self.handlers[self.which]

        @pre_handler.setter
        def pre_handler(self, value):
            pass

    p = Switching(symbol_name="fib")
    k.register_kprobe(p)
    assert m.call("fib", 1) == 1
    object.__setattr__(p, "which", 1)       # not even through Kprobe.__setattr__
    assert m.call("fib", 1) == 1 and log == [0, 1]


def test_a_regs_view_a_handler_keeps_is_never_reused(km, trap_path):
    """trap.c hands the next trap the view the last one made when nobody kept it; one a
    handler kept stays what it was."""
    m, k = km
    kept = []

    def pre(p, regs):
        regs.di                 # read now, kept in the view
        kept.append(regs)
        return 0

    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=pre,
                             post_handler=lambda p, r, f: r.ip))
    assert m.call("fib", 3) == 2
    assert len({id(r) for r in kept}) == len(kept) == 5
    assert [r.di for r in kept] == [3, 2, 1, 0, 1]



def test_an_aggregate_is_disabled_only_through_its_children(km):
    m, k = km
    a, b = Kprobe(symbol_name="fib"), Kprobe(symbol_name="fib")
    k.register_kprobes([a, b])
    top = k.table[a.addr]
    assert top.is_aggregate and top.disabled is False
    top.disabled = False                    # Kprobe.__init__'s default: nothing to do
    with pytest.raises(AttributeError, match="disabling all its children"):
        top.disabled = True
    k.disable_kprobe(a)
    k.disable_kprobe(b)
    assert top.disabled is True and a.addr not in k.armed


def test_a_hit_keeps_its_own_probe_types_layout_while_python_runs(rm, trap_path):
    """trap.c finds where a probe type keeps its slots once per type, in a cache of four.
    A probe whose `disabled` is a property runs Python in the middle of its hit; there it
    re-enters the machine and hits four probes of other types, which take every cache
    entry.  The outer hit still reads its own slots (a copy), never another type's."""
    m, k = rm
    log = []
    names = ("pre_handler", "post_handler", "ainsn", "disabled", "guest_shared")
    pads = tuple(f"pad{j:02d}" for j in range(40))
    others = [type(f"Other{i}", (Kprobe,), {"__slots__": names + pads}) for i in range(4)]
    state = {"reenter": False}

    class Outer(Kprobe):
        __slots__ = ("pre_handler", "post_handler", "ainsn", "guest_shared") + \
            tuple(f"pad{j:02d}" for j in range(60))

        @property
        def disabled(self):
            if state["reenter"]:
                state["reenter"] = False
                for t in others:
                    q = t(symbol_name="fib", pre_handler=lambda p, r: log.append("other") or 0)
                    k.register_kprobe(q)
                    m.call("fib", 0)
                    k.unregister_kprobe(q)
            return False

        @disabled.setter
        def disabled(self, value):
            pass

    outer = Outer(symbol_name="call_outer", pre_handler=lambda p, r: log.append("outer") or 0)
    outer.pad42 = lambda p, r: log.append("pad42: another type's pre_handler slot") or 0
    k.register_kprobe(outer)
    state["reenter"] = True
    assert m.call("call_outer", 0) == m.call("call_outer", 0)
    assert log[-2:] == ["outer", "outer"] and "pad42" not in " ".join(log)


def test_another_classs_slot_on_a_probe_class_raises_as_in_python(km, trap_path):
    """A member descriptor of an unrelated class put on a probe's class does not apply to
    the probe (Python raises TypeError on access): trap.c reads it by name too."""
    m, k = km

    class Unrelated:
        __slots__ = ("a", "b")

    class Probe(Kprobe):
        pass

    p = Probe(symbol_name="fib", pre_handler=lambda p, r: 0)
    k.register_kprobe(p)
    Probe.pre_handler = Unrelated.__dict__["b"]
    with pytest.raises(TypeError):
        p.pre_handler
    with pytest.raises(TypeError, match="doesn't apply"):
        m.call("fib", 0)
