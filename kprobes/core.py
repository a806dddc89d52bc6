"""The generic kprobes core (like Linux's kernel/kprobes.c): probe objects, the registry
keyed by address, aggregate probes, enable/disable, batches with rollback, nmissed and the
causes of misses, instruction slots, the debugfs `list`, trap counters and mechanism events.

It never looks at an opcode: the x86_64 part (kprobes/arch/x86_64.py) decides what can be
probed, copies and re-targets instructions, arms and disarms bytes, and owns the trap path.
Errors carry the errno Linux's register_kprobe returns for the same case.

Reaches the machine only through emu.Machine's public methods.  Registration runs on the
host between runs or inside a handler (then arming takes effect at the next instruction).
"""

import errno as _errno
from collections import Counter

from emu import MemoryFault
from kprobes.arch import x86_64 as arch

PAGE_SIZE = 4096


class KprobeError(Exception):
    """A refused registration; `.errno` is what Linux returns for the same case."""

    def __init__(self, errno, message):
        super().__init__(f"{message} ({_errno.errorcode.get(errno, errno)})")
        self.errno = errno


class Kprobe:
    """struct kprobe: where to probe and what to call.

    pre_handler(p, regs) -> int   non-zero: "I changed regs.ip, do not single-step"
    post_handler(p, regs, flags)  after the single-step; regs.ip is still in the slot
    fault_handler(p, regs, trapnr) -> int   non-zero: fault handled
    """

    is_aggregate = False
    internal = False
    kretprobe = None
    resume_in_post_handler = False
    kind = "k"

    def __init__(self, addr=None, symbol_name=None, offset=0, pre_handler=None,
                 post_handler=None, fault_handler=None):
        self.addr = addr
        self.symbol_name = symbol_name
        self.offset = offset
        self.pre_handler = pre_handler
        self.post_handler = post_handler
        self.fault_handler = fault_handler
        self.nmissed = 0
        self.misses = Counter()      # nmissed by cause
        self.opcode = None           # the byte the int3 replaced
        self.ainsn = None            # arch data: the out-of-line copy
        self.disabled = False
        self._owner = None
        self._filled_addr = None     # the addr registration resolved and wrote back

    @property
    def registered(self):
        return self._owner is not None

    def __repr__(self):
        where = (f"{self.symbol_name}+{self.offset:#x}" if self.symbol_name
                 else f"{self.addr:#x}" if self.addr is not None else "?")
        state = " disabled" if self.disabled else ""
        return f"<{type(self).__name__} {where}{state} nmissed={self.nmissed}>"


class AggrKprobe(Kprobe):
    """The manager probe that takes a second probe's address over: it holds the slot and
    calls its children in order (newest first, as 2.6.13's list_add_rcu at the head),
    stopping at the first pre_handler that returns non-zero."""

    is_aggregate = True

    def __init__(self, core, first):
        super().__init__(addr=first.addr)
        self.core = core
        self.opcode = first.opcode
        self.ainsn = first.ainsn
        self.children = [first]
        self.pre_handler = self.aggr_pre_handler
        self.post_handler = self.aggr_post_handler
        self.fault_handler = self.aggr_fault_handler

    @property
    def disabled(self):
        return all(c.disabled for c in self.children) if hasattr(self, "children") else False

    @disabled.setter
    def disabled(self, value):
        pass    # derived from the children

    def aggr_pre_handler(self, _p, regs):
        for kp in list(self.children):
            if kp.pre_handler is not None and not kp.disabled:
                self.core.curr_kprobe = kp
                if kp.pre_handler(kp, regs):
                    return 1
            self.core.curr_kprobe = None
        return 0

    def aggr_post_handler(self, _p, regs, flags):
        for kp in list(self.children):
            if kp.post_handler is not None and not kp.disabled:
                self.core.curr_kprobe = kp
                kp.post_handler(kp, regs, flags)
        self.core.curr_kprobe = None

    def aggr_fault_handler(self, _p, regs, trapnr):
        cur = self.core.curr_kprobe
        if cur is not None and cur.fault_handler is not None:
            return cur.fault_handler(cur, regs, trapnr)
        return 0


class InsnSlots:
    """Executable instruction slots (get_insn_slot/free_insn_slot of kernel/kprobes.c):
    pages of MAX_INSN_SIZE-byte slots from the module area, within +-2 GiB of kernel and
    module text so a %rip-relative displacement can be re-targeted.  An emptied page is
    given back unless it is the only one."""

    SLOT_SIZE = arch.MAX_INSN_SIZE
    PER_PAGE = PAGE_SIZE // arch.MAX_INSN_SIZE      # 273

    def __init__(self, area):
        self.area = area
        self.pages = []     # [base, used flags bytearray, nused]

    def get_insn_slot(self):
        for page in self.pages:
            if page[2] < self.PER_PAGE:
                i = page[1].index(0)
                page[1][i] = 1
                page[2] += 1
                return page[0] + i * self.SLOT_SIZE
        try:
            base = self.area.alloc(PAGE_SIZE, PAGE_SIZE, tag="kprobe insn page")
        except Exception as exc:   # noqa: BLE001 - the area's own error, as ENOMEM
            raise KprobeError(_errno.ENOMEM, f"no memory for an instruction slot: {exc}") \
                from None
        page = [base, bytearray(self.PER_PAGE), 1]
        page[1][0] = 1
        self.pages.insert(0, page)
        return base

    def free_insn_slot(self, slot):
        for page in self.pages:
            if page[0] <= slot < page[0] + PAGE_SIZE:
                i = (slot - page[0]) // self.SLOT_SIZE
                page[1][i] = 0
                page[2] -= 1
                if page[2] == 0 and len(self.pages) > 1:
                    self.pages.remove(page)
                    self.area.free(page[0])
                return
        raise ValueError(f"{slot:#x} is not an instruction slot")

    @property
    def used(self):
        return sum(p[2] for p in self.pages)


class Kprobes:
    """The kprobes subsystem installed in one Machine (init_kprobes).

    kretprobe_design: "task" (instances keyed by the task, as 2.6.13 shipped) or "stack"
    (the June 2005 original keyed by the return slot's address, four traps per call).
    flush_on_exec: also flush a task's return-probe instances from flush_thread() on the
    exec path, as 2.6.13 did (the known problem); by default only exit flushes.
    """

    def __init__(self, m, kretprobe_design="task", flush_on_exec=False):
        self.m = m
        self.table = {}             # probe address -> Kprobe or AggrKprobe
        self.armed = set()          # addresses whose byte is 0xCC now
        self.slots = InsnSlots(m.module_area)
        # Traps taken, by the kinds the trap path sees rarely (see `traps`).
        self.rare_traps = {"fault": 0, "int3-foreign": 0, "int3-vanished": 0}
        self.curr_kprobe = None     # the child whose handler runs inside an aggregate
        self._enabled = True
        self.arch = arch.ArchKprobes(self)
        # The trap path's C entry points (they hand all but the plain hit to
        # arch.kprobe_handler / arch.post_kprobe_handler).
        m.register_trap_handler(3, self.arch.int3, first=True)
        m.register_trap_handler(1, self.arch.debug, first=True)
        for vector in arch.FAULT_VECTORS:
            m.register_trap_handler(vector, self.arch.kprobe_fault_handler, first=True)
        m.text_originals.append(self.original_byte)
        from kprobes.kretprobe import KretprobeManager

        self.kretprobes = KretprobeManager(self, kretprobe_design, flush_on_exec)

    @property
    def traps(self):
        """Traps taken, by kind: "int3" and "debug" are the two of each probe hit (counted
        by the per-CPU state, in C on the plain hit), "fault" a fault while kprobes ran,
        "int3-foreign" an int3 that is not a probe's, "int3-vanished" one whose probe was
        removed after the CPU trapped on it."""
        return {"int3": self.arch.n_int3, "debug": self.arch.n_debug, **self.rare_traps}

    # -- events -----------------------------------------------------------------------

    def emit(self, kind, **data):
        if self.m.observers:
            self.m.emit("kprobes." + kind, **data)

    def missed(self, p, cause):
        """Count a missed activation of `p` and why."""
        p.nmissed += 1
        p.misses[cause] += 1
        self.emit("miss", probe=p, cause=cause)

    # -- lookups ----------------------------------------------------------------------

    def get_kprobe(self, addr):
        return self.table.get(addr)

    def original_byte(self, addr):
        p = self.table.get(addr)
        return p.opcode if p is not None and addr in self.armed else None

    def original_bytes(self, addr, size):
        """Guest text with every armed breakpoint replaced by the byte it covers."""
        data = bytearray(self.m.read(addr, size))
        for a in self.armed:
            if addr <= a < addr + size:
                data[a - addr] = self.table[a].opcode
        return bytes(data)

    def probes(self):
        """Every probe users registered (aggregates expanded into their children; the
        subsystem's own trampoline probe left out)."""
        out = []
        for p in self.table.values():
            out.extend(c for c in (p.children if p.is_aggregate else [p])
                       if not c.internal)
        return out

    # -- registration -----------------------------------------------------------------

    def _resolve(self, p):
        """_kprobe_addr(): the address a probe asks for -- addr, or symbol_name + offset.
        An addr that an earlier registration filled in does not count as asked for."""
        addr = None if p.addr == p._filled_addr else p.addr
        name = p.symbol_name
        if (addr is None) == (name is None):
            raise KprobeError(_errno.EINVAL, "give either addr or symbol_name, not "
                              + ("both" if addr is not None else "neither"))
        if name is not None:
            base = self.m.symbols.lookup_name(name)
            if base is None:
                raise KprobeError(_errno.ENOENT, f"unknown symbol '{name}'")
            return base + p.offset
        return addr + p.offset

    def blacklisted(self, addr):
        """within_kprobe_blacklist(): the guest's .kprobes.text (trap entry code and what
        runs while a kprobe trap is in progress), the trampoline, and modules'
        .kprobes.text sections."""
        m = self.m
        lo, hi = (m.symbols.lookup_name("__kprobes_text_start"),
                  m.symbols.lookup_name("__kprobes_text_end"))
        if lo is not None and lo <= addr < hi:
            return "in .kprobes.text"
        tramp = m.symbols.get("kretprobe_trampoline")
        if tramp is not None and tramp.addr <= addr < tramp.addr + max(tramp.elf_size, 1):
            return "kretprobe_trampoline"
        if m._modules is not None:
            for mod in m._modules.modules.values():
                start, size, _flags = mod.sections.get(".kprobes.text", (0, 0, 0))
                if start <= addr < start + size:
                    return f"in {mod.name}'s .kprobes.text"
        return None

    def check_address(self, addr):
        """check_kprobe_address_safe() + can_probe(): EINVAL outside text, in the
        blacklist, on a foreign int3 or an instruction that cannot be stepped out of
        line; EILSEQ off an instruction boundary."""
        m = self.m
        where = m.symbols.format(addr)
        if not m.is_kernel_text(addr):
            raise KprobeError(_errno.EINVAL, f"{where}: not in kernel or module text")
        why = self.blacklisted(addr)
        if why:
            raise KprobeError(_errno.EINVAL, f"{where}: blacklisted ({why})")
        if addr not in self.table:
            try:
                if m.read(addr, 1)[0] == arch.BREAKPOINT_INSTRUCTION:
                    raise KprobeError(_errno.EINVAL, f"{where}: an int3 is already there "
                                      "and it is not a kprobe's")
            except MemoryFault:
                raise KprobeError(_errno.EINVAL, f"{where}: not mapped") from None
        sym = m.symbols.symbol_at(addr)
        if sym is not None and sym.addr != addr:
            code = self.original_bytes(sym.addr, addr - sym.addr + arch.MAX_INSN_SIZE)
            if not arch.on_boundary(code, sym.addr, addr):
                raise KprobeError(_errno.EILSEQ, f"{where}: not an instruction boundary")

    def register_internal(self, p):
        """Register one of the subsystem's own probes (the kretprobe trampoline): no
        blacklist check -- it is on the blacklist precisely so nobody else probes it --
        and it stays armed whatever the global switch says."""
        p.internal = True
        self.arch.prepare(p, p.addr)
        p._owner = self
        self.table[p.addr] = p
        self._arm(p)

    def register_kprobe(self, p):
        if p.registered:
            raise KprobeError(_errno.EINVAL, f"{p!r} is already registered")
        if any(c is p for c in self.probes()):
            raise KprobeError(_errno.EINVAL, f"{p!r} is already registered")
        addr = self._resolve(p)
        self.check_address(addr)
        old = self.table.get(addr)
        if old is None:
            try:
                self.arch.prepare(p, addr)
            except arch.ArchError as exc:
                raise KprobeError(getattr(_errno, exc.errno_name),
                                  f"{self.m.symbols.format(addr)}: {exc}") from None
            p.addr = p._filled_addr = addr
            self.table[addr] = p
            if self._enabled and not p.disabled:
                self._arm(p)
        else:
            p.addr = p._filled_addr = addr
            self._register_aggr(old, p)
        p.nmissed = 0
        p.misses.clear()
        p._owner = self
        self.emit("register", probe=p, addr=addr)
        return 0

    def _register_aggr(self, old, p):
        """register_aggr_kprobe(): the second probe at an address makes an aggregate that
        takes the first's place and slot; no new slot is taken (2.6.13 leaked one)."""
        if not old.is_aggregate:
            ap = AggrKprobe(self, old)
            self.table[old.addr] = ap
            old = ap
        p.opcode, p.ainsn = old.opcode, old.ainsn
        old.children.insert(0, p)
        if self._enabled and not p.disabled and old.addr not in self.armed:
            self._arm(old)

    def unregister_kprobe(self, p):
        top = self.table.get(p.addr) if p.registered else None
        if top is None:
            return
        if top.is_aggregate:
            top.children.remove(p)
            if self.curr_kprobe is p:
                self.curr_kprobe = None
            if not top.children:
                self._remove(top)
            elif top.disabled and top.addr in self.armed:
                self._disarm(top)
        else:
            self._remove(top)
        p._owner = None
        self.emit("unregister", probe=p, addr=p.addr)

    def _remove(self, top):
        if top.addr in self.armed:
            self._disarm(top)
        del self.table[top.addr]
        self.arch.remove(top)

    def register_kprobes(self, probes):
        """All or nothing: on the first failure the ones already registered are
        unregistered again and the error is raised."""
        return self._register_all(probes, self.register_kprobe, self.unregister_kprobe)

    @staticmethod
    def _register_all(items, register, unregister):
        done = []
        try:
            for item in items:
                register(item)
                done.append(item)
        except KprobeError:
            for item in reversed(done):
                unregister(item)
            raise
        return 0

    def unregister_kprobes(self, probes):
        for p in probes:
            self.unregister_kprobe(p)

    # -- return probes (kprobes/kretprobe.py) -----------------------------------------

    def register_kretprobe(self, rp):
        return self.kretprobes.register(rp)

    def unregister_kretprobe(self, rp):
        self.kretprobes.unregister(rp)

    def register_kretprobes(self, rps):
        """All or nothing, like register_kprobes."""
        return self._register_all(rps, self.register_kretprobe, self.unregister_kretprobe)

    def unregister_kretprobes(self, rps):
        for rp in rps:
            self.unregister_kretprobe(rp)

    # -- arming, enable/disable -------------------------------------------------------

    def _arm(self, top):
        self.arch.arm(top)
        self.armed.add(top.addr)
        self.emit("arm", addr=top.addr)

    def _disarm(self, top):
        self.arch.disarm(top)
        self.armed.discard(top.addr)
        self.emit("disarm", addr=top.addr)

    def disable_kprobe(self, p):
        if not p.registered:
            raise KprobeError(_errno.EINVAL, f"{p!r} is not registered")
        p.disabled = True
        top = self.table[p.addr]
        if top.disabled and top.addr in self.armed:
            self._disarm(top)

    def enable_kprobe(self, p):
        if not p.registered:
            raise KprobeError(_errno.EINVAL, f"{p!r} is not registered")
        p.disabled = False
        top = self.table[p.addr]
        if self._enabled and top.addr not in self.armed:
            self._arm(top)

    @property
    def enabled(self):
        """The debugfs `enabled` switch: off disarms every probe; on re-arms those not
        disabled one by one (it never resurrects an individually disabled probe)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value):
        value = bool(value)
        if value == self._enabled:
            return
        self._enabled = value
        for top in list(self.table.values()):
            if top.internal:
                continue
            if value and not top.disabled and top.addr not in self.armed:
                self._arm(top)
            elif not value and top.addr in self.armed:
                self._disarm(top)

    # -- listing ----------------------------------------------------------------------

    def list(self):
        """The debugfs kprobes/list text: `<addr>  <k|r>  <sym+0xoff>  <mod> [flags]`."""
        lines = []
        for addr in sorted(self.table):
            top = self.table[addr]
            for p in (top.children if top.is_aggregate else [top]):
                sym = self.m.symbols.symbol_at(addr)
                if sym is not None:
                    where = f"{sym.name}+{addr - sym.addr:#x}  {sym.module or ' '} "
                else:
                    where = f"{addr:016x} "
                flags = "[DISABLED]" if p.disabled else ""
                lines.append(f"{addr:016x}  {p.kind}  {where}{flags}")
        return "\n".join(lines) + ("\n" if lines else "")
