"""kretprobes: return probes through the kretprobe_trampoline, in both June 2005 designs.

Design "task" (the redesign that shipped in 2.6.13, shared/reference/kprobes-2.6.13.md §6):
  * at entry, pre_handler_kretprobe takes a free instance, records rp, the guest's own
    `current` and the return address at [rsp], writes the trampoline's address into [rsp]
    and adds the instance at the head of its task's bucket (64 buckets, hash_ptr(task));
  * at return, the trampoline's int3 reaches trampoline_probe_handler, which walks the
    current task's bucket from the head, calls each handler and recycles each instance
    until it recycles one whose ret_addr is not the trampoline, sets ip there and returns
    1: no single-step, three traps per probed call;
  * a task's leftovers are recycled by kprobe_flush_task on exit, the stack left alone.

Design "stack" (the one it replaced, §7): instances keyed by the address of the return
slot, their task derived by masking that address to the thread_info at the stack base;
the trampoline's nop is single-stepped and trampoline_post_handler sets ip: four traps per
probed call; the flush writes ret_addr back into the stack.

Also what later kernels added on top (modern-kprobes-and-events.md §1.3): entry_handler
with per-instance data, misses counted by cause, stack traces through the trampoline.

The generic part lives here, as in modern Linux (kretprobe_trampoline_handler and the
instance bookkeeping); what knows x86_64 -- where the return address is, which slot `ret`
popped, how a task is derived from a stack address, the trampoline probe's thin handlers
that set the return ip -- is kprobes/arch/x86_64/kretprobe.py.

Must not import: unicorn, kprobes.core (the core hands itself in).
"""

import errno as _errno
from collections import Counter

from emu.tasks import read_task
from kprobes.arch import ArchKretprobes, KretprobeInstance
from kprobes.errors import KprobeError
from kprobes.probe import Kprobe, check_handlers

# The caps modern Linux puts on a kretprobe: kprobe_events refuses a maxactive above
# KRETPROBE_MAXACTIVE_MAX (trace_kprobe.c), register_kretprobe a data_size above
# KRETPROBE_MAX_DATA_SIZE (kprobes.h), both with E2BIG.  register_kretprobe itself takes
# any maxactive and fails with ENOMEM when the pool cannot be allocated; kpemu's would first
# take all of the host's memory, so it refuses a pool above MAXACTIVE_POOL_MAX (about 140
# MiB of instances) with that ENOMEM.
KRETPROBE_MAXACTIVE_MAX = 4096
KRETPROBE_MAX_DATA_SIZE = 4096
MAXACTIVE_POOL_MAX = 1 << 20
KPROBE_HASH_BITS = 6
KPROBE_TABLE_SIZE = 1 << KPROBE_HASH_BITS
NR_CPUS = 1
DESIGNS = ("task", "stack")


def hash_ptr(value, bits=KPROBE_HASH_BITS):
    """hash_ptr() on 64-bit: multiply by GOLDEN_RATIO_PRIME_64, keep the top bits."""
    return ((value * 0x9E37FFFFFFFC0001) & 0xFFFFFFFFFFFFFFFF) >> (64 - bits)


def _remove_near_head(items, item):
    """Remove `item` from a list whose head is its end, searching from the head: the
    instance recycled is almost always the newest one."""
    for i in range(len(items) - 1, -1, -1):
        if items[i] is item:
            del items[i]
            return
    raise ValueError(f"{item!r} not in list")


# KretprobeInstance is struct kretprobe_instance: `rp`; `task` (design "task") or
# `stack_addr` (both: the return slot, which design "stack" keys by and the unwinder uses)
# say whose call it is; `ret_addr`; `data`, shared by entry_handler and handler;
# `orphan_of`, the kretprobe an orphan was taken for (rp is None once it is unregistered),
# whose miss report counts the orphan's return.  KretprobeInstance(rp) makes a free one.
# It is a C struct (the arch's trap.c), so the C trap path reads and writes it as the code
# here does, and its addresses are Python ints only once the code here reads them: one
# takes 104 bytes.


class Kretprobe:
    """struct kretprobe: a return probe on the function at symbol_name (or addr).

    handler(ri, regs)           at return; regs.ax is the return value (writable)
    entry_handler(ri, regs)     at entry; non-zero means "do not track this call"
    """

    kind = "r"

    def __init__(self, symbol_name=None, handler=None, entry_handler=None, data_size=0,
                 maxactive=0, addr=None, offset=0):
        self.kp = Kprobe(addr=addr, symbol_name=symbol_name, offset=offset)
        self.kp.kind = "r"
        self.kp.kretprobe = self
        self.handler = handler
        self.entry_handler = entry_handler
        self.data_size = data_size
        self.maxactive = maxactive
        self.nmissed = 0              # entries that found no free instance
        self.misses = Counter()       # every untracked or unreported call, by cause
        # Both lists keep their head at the END, so taking and recycling the most recent
        # instance (every call of a recursion) is O(1).
        self.free_instances = []
        self.used_instances = []
        self.entries = 0              # entry hits that reached pre_handler_kretprobe
        self.returns = 0              # handler calls
        self.flushed = 0              # instances recycled by kprobe_flush_task

    @property
    def addr(self):
        return self.kp.addr

    @property
    def symbol_name(self):
        return self.kp.symbol_name

    @property
    def registered(self):
        return self.kp.registered

    def miss_report(self):
        """Why calls went unreported, with the entry kprobe's own misses merged in:
        'maxactive' (pool empty), 'entry_handler' (vetoed), 'reentered' (the entry probe
        hit while kprobes was busy), 'disabled', 'orphaned' (returned after unregister)."""
        report = Counter(self.misses)
        report.update(self.kp.misses)
        return dict(report)

    def __repr__(self):
        return (f"<Kretprobe {self.kp.symbol_name or hex(self.kp.addr or 0)} "
                f"maxactive={self.maxactive} nmissed={self.nmissed}>")


class KretprobeManager:
    """The kretprobe side of one Kprobes: the instance table, the trampoline probe
    (arch_init_kprobes), the flush on task exit, and the unwinder's resolver."""

    def __init__(self, core, design="task", flush_on_exec=False):
        self.core = core
        self.m = core.m
        self.design = design
        self.flush_on_exec = flush_on_exec
        self.table = [[] for _ in range(KPROBE_TABLE_SIZE)]   # kretprobe_inst_table
        self.orphans_returned = 0
        self.handling = None          # the instance whose handler runs now
        self.arch = ArchKretprobes(self)
        self._flushers = None
        self.layout = self.m.layout
        tramp = self.m.symbols.lookup_name("kretprobe_trampoline")
        if tramp is None:
            raise KprobeError(_errno.ENOENT, "the image has no kretprobe_trampoline")
        self.tramp = tramp
        # arch_init_kprobes(): the trampoline's probe, armed from the start.
        self.trampoline_p = Kprobe(addr=tramp)
        if design == "task":
            self.trampoline_p.pre_handler = self.arch.trampoline_probe_handler
        else:
            self.trampoline_p.pre_handler = self.arch.trampoline_probe_handler_stack
            self.trampoline_p.post_handler = self.arch.trampoline_post_handler
            self.trampoline_p.resume_in_post_handler = True
        core.register_internal(self.trampoline_p)
        if design == "task":
            self.arch.arch_init_kretprobes(self.trampoline_p)
        self.m.hypercall_handlers["HC_KPROBE_FLUSH_TASK"].append(self.kprobe_flush_task)
        self.m.unwind_resolvers.append(self.resolve_return_address)

    # -- registration -----------------------------------------------------------------

    def register(self, rp):
        if rp.registered:
            raise KprobeError(_errno.EINVAL, f"{rp!r} is already registered")
        check_handlers(rp, ("handler", "entry_handler"))
        for field, cap, err, why in (
                ("maxactive", MAXACTIVE_POOL_MAX, _errno.ENOMEM, "instances kpemu allocates"),
                ("data_size", KRETPROBE_MAX_DATA_SIZE, _errno.E2BIG, "Linux allows")):
            value = getattr(rp, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise KprobeError(_errno.EINVAL, f"{rp!r}: {field} must be an integer, "
                                  f"not {type(value).__name__}")
            if value > cap:
                raise KprobeError(err, f"{rp!r}: {field} {value} is more than the {cap} "
                                  f"{why}")
        if rp.data_size < 0:
            raise KprobeError(_errno.EINVAL, f"{rp!r}: data_size {rp.data_size} is negative")
        addr = self.core.kprobe_addr(rp.kp)
        sym = self.m.symbols.symbol_at(addr)
        if sym is None or sym.addr != addr:
            raise KprobeError(_errno.EINVAL, f"{self.m.symbols.format(addr)}: a return "
                              "probe must be on a function's entry")
        if sym.name in self._flushing_functions():
            raise KprobeError(_errno.EINVAL, f"{sym.name}: it calls kprobe_flush_task(), "
                              "which would recycle this return probe's own instance "
                              "before it returns (2.6.13: \"don't put a return probe on "
                              "these functions\")")
        if rp.maxactive <= 0:
            rp.maxactive = max(10, 2 * NR_CPUS)      # CONFIG_PREEMPT: the guest preempts
        rp.free_instances = [KretprobeInstance(rp) for _ in range(rp.maxactive)]
        rp.used_instances = []
        rp.nmissed = 0
        rp.misses.clear()
        rp.entries = rp.returns = rp.flushed = 0
        rp.kp.pre_handler = self.pre_handler_kretprobe
        try:
            self.core.register_kprobe(rp.kp)
        except KprobeError:
            rp.free_instances = []
            raise
        return 0

    def _flushing_functions(self):
        """Functions with a direct call to kprobe_flush_task() that flushes in this mode
        (exit_thread always; flush_thread only with flush_on_exec), found once by
        decoding the kernel's text."""
        if self._flushers is None:
            target = self.m.symbols.lookup_name("kprobe_flush_task")
            self._flushers = set() if target is None else self.arch.functions_calling(target)
            if not self.flush_on_exec:
                self._flushers.discard("flush_thread")
        return self._flushers

    def unregister(self, rp):
        """The entry probe goes; free instances are freed; instances in flight are
        orphaned (rp = None): their return still resumes at the right caller, runs no
        handler and frees them."""
        if not rp.registered:
            return
        self.core.unregister_kprobe(rp.kp)
        rp.free_instances = []
        for ri in rp.used_instances:
            ri.rp = None
            ri.orphan_of = rp
        rp.used_instances = []

    # -- entry --------------------------------------------------------------------------

    def pre_handler_kretprobe(self, p, regs):
        """The entry probe's pre_handler: take an instance and hijack the return."""
        rp = p.kretprobe
        rp.entries += 1
        if not rp.free_instances:
            rp.nmissed += 1
            rp.misses["maxactive"] += 1
            self.core.emit("miss", probe=rp, cause="maxactive")
            return 0
        ri = rp.free_instances.pop()
        ri.rp = rp
        slot = self.arch.return_slot(regs)
        ri.stack_addr = slot
        if self.design == "task":
            ri.task = self.m.current_addr          # the guest's own current
        else:
            ri.task = self.arch.task_of_stack(slot)
        if rp.entry_handler is not None:
            if rp.data_size:
                ri.data[:] = bytes(rp.data_size)
            if self.m.observers:
                self.core.emit("handler", which="entry_handler", probe=rp, instance=ri,
                               regs=regs.as_dict())
            if rp.entry_handler(ri, regs):
                rp.free_instances.append(ri)
                rp.misses["entry_handler"] += 1
                return 0
        observed = bool(self.m.observers)
        if observed:
            was = self.m.mem.u64(slot)
        ri.ret_addr = self.arch.arch_prepare_kretprobe(slot, self.tramp)
        self.table[self._bucket(ri)].append(ri)      # at the head of its bucket
        rp.used_instances.append(ri)
        if observed:
            self.core.emit("swap", slot=slot, old=was, new=self.tramp, instance=ri)
            self.core.emit("instance", what="taken", instance=ri, task=ri.task,
                           bucket=self._bucket(ri))
        return 0

    def _bucket(self, ri):
        return hash_ptr(ri.task)

    # -- return (design "task") -------------------------------------------------------

    def kretprobe_trampoline_handler(self, regs):
        """Every return of the current task's instances, newest first, until the one
        whose ret_addr is not the trampoline: that is the real return address, returned
        (the arch's trampoline handler resumes there).  None, with the machine stopped by
        a BUG, when the task has no such instance."""
        task = self.m.current_addr
        bucket = self.table[hash_ptr(task)]
        orig = 0
        i = len(bucket) - 1                       # from the head (the list's end)
        while i >= 0:
            ri = bucket[i]
            i -= 1
            if ri.task != task:
                continue                          # another task sharing the bucket
            self._report_return(ri, regs)
            orig = ri.ret_addr
            self.recycle(ri)                      # removes it; older ones keep their index
            if orig != self.tramp:
                break
        if orig == 0 or orig == self.tramp:
            self.no_instance(task)
            return None
        return orig

    def no_instance(self, task):
        """A return through the trampoline that no instance of `task` accounts for: stop
        the machine with a BUG (both trap paths report it here)."""
        self.m.bug(f"kretprobe BUG: return through kretprobe_trampoline with no "
                   f"instance for task {task:#x} ({self._task_name(task)})")

    def _report_return(self, ri, regs):
        rp = ri.rp
        if rp is None:
            self._orphan_returned(ri)
            return
        if rp.handler is not None:
            self.handling = ri
            if self.m.observers:
                self.core.emit("handler", which="handler", probe=rp, instance=ri,
                               regs=regs.as_dict())
            try:
                rp.handler(ri, regs)
            finally:
                self.handling = None
        rp.returns += 1

    def _orphan_returned(self, ri):
        """An instance whose kretprobe was unregistered in flight came back: no handler,
        counted as an 'orphaned' miss of the kretprobe it was taken for."""
        self.orphans_returned += 1
        ri.orphan_of.misses["orphaned"] += 1
        self.core.emit("miss", probe=ri.orphan_of, cause="orphaned")

    def recycle(self, ri):
        """recycle_rp_inst(): out of the table; back to its rp's free list, or dropped
        when orphaned."""
        _remove_near_head(self.table[self._bucket(ri)], ri)
        rp = ri.rp
        if rp is not None:
            _remove_near_head(rp.used_instances, ri)
            rp.free_instances.append(ri)
        if self.m.observers:
            self.core.emit("instance", what="recycled" if rp else "freed", instance=ri,
                           task=ri.task, bucket=self._bucket(ri))

    # -- return (design "stack") ------------------------------------------------------

    def report_slot_returns(self, slot, regs):
        """Design "stack": call the handler of every instance whose return slot is
        `slot` (the one `ret` just popped)."""
        task = self.arch.task_of_stack(slot)
        for ri in self.table[hash_ptr(task)][::-1]:
            if ri.stack_addr == slot and ri.rp is not None:
                self._report_return(ri, regs)

    def recycle_slot(self, slot):
        """Design "stack", after the nop's single-step: recycle every instance of
        `slot` and return the real return address (the oldest instance's); None, with
        the machine stopped by a BUG, when the slot has none."""
        task = self.arch.task_of_stack(slot)
        ret_addr = None
        for ri in self.table[hash_ptr(task)][::-1]:
            if ri.stack_addr == slot:
                if ri.rp is None:
                    self._orphan_returned(ri)
                ret_addr = ri.ret_addr
                self.recycle(ri)
        if ret_addr is None:
            self.m.bug(f"kretprobe BUG: no instance for the return slot {slot:#x}")
        return ret_addr

    # -- task exit ----------------------------------------------------------------------

    def kprobe_flush_task(self, task, call_site):
        """The guest's kprobe_flush_task(tk) (hypercall).  2.6.13 called it from both
        exit_thread() and flush_thread(); by default only the exit path flushes (the
        later fix), flush_on_exec=True reproduces the exec problem."""
        caller = self.m.symbols.symbol_at(call_site)
        if caller is not None and caller.name == "flush_thread" and not self.flush_on_exec:
            return
        # The task's bucket: 2.6.13 walked current's, its callers always passing current;
        # Linux releases a dead task from another task's context.
        for ri in self.table[hash_ptr(task)][::-1]:
            if ri.task == task:
                if self.design == "stack":
                    # The old design put the real return address back in the stack.
                    self.m.mem.set_u64(ri.stack_addr, ri.ret_addr)
                if ri.rp is not None:
                    ri.rp.flushed += 1
                self.recycle(ri)
        self.core.emit("flush", task=task, caller=caller.name if caller else None)

    # -- unwinding through the trampoline ---------------------------------------------

    def resolve_return_address(self, ret_addr, slot):
        """Unwinder resolver (as Linux >= 5.15): a trampoline address found in a return
        slot is the real return address of the instance that took that slot; the ip of
        a return handler names the caller it returns to -- through the slot it took when
        that was the trampoline already (a tail call: the callee's instance holds the
        trampoline, the tail caller's the real address)."""
        tramp = self.tramp
        if slot is None:
            if ret_addr in (tramp, tramp + 1) and self.handling is not None:
                ret_addr = self.handling.ret_addr
                slot = self.handling.stack_addr
            else:
                return ret_addr
        if ret_addr != tramp:
            return ret_addr
        for bucket in self.table:
            for ri in bucket:
                if ri.stack_addr == slot and ri.ret_addr != tramp:
                    return ri.ret_addr
        return ret_addr

    def _task_name(self, task):
        try:
            return str(read_task(self.m.mem, self.layout, task))
        except Exception:  # noqa: BLE001 - a bad task pointer still gets a report
            return "?"

    def instances(self):
        return [ri for bucket in self.table for ri in reversed(bucket)]
