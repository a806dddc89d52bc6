"""The generic kprobes core (like Linux's kernel/kprobes.c): the registry keyed by address,
aggregate probes, enable/disable, batches with rollback, nmissed and the causes of misses,
the instruction slots, the blacklist, the debugfs `list`, trap counters and mechanism
events.  The probe objects themselves are kprobes/probe.py.

It never looks at an opcode, a vector or an EFLAGS bit: the arch part (kprobes/arch/)
installs the trap path, decides what can be probed, copies and re-targets instructions and
arms and disarms bytes.  Errors carry the errno Linux's register_kprobe returns for the same
case.

Reaches the machine only through emu.Machine's public methods.  Registration runs on the
host between runs or inside a handler (then arming takes effect at the next instruction).

A module notifier (like kprobes_module_callback()) kills the probes on a module's text
when it goes: they become [GONE] -- out of the table the trap path reads, their slot
freed, their byte never written again (the text is freed; another module may be loaded
there) -- and stay registered and listed until their owner unregisters them.

Must not import: unicorn.
"""

import bisect
import errno as _errno

from emu import Machine
from emu.modules import MODULE_STATE_GOING
from kprobes import arch
from kprobes.errors import KprobeError, KprobesError
from kprobes.kretprobe import DESIGNS, KretprobeManager
from kprobes.probe import AggrKprobe, InsnSlots, check_handlers, fill_kprobe_addr, kprobe_addr

_PAGE_SHIFT = 12        # armed addresses are indexed by 4 KiB page


class Kprobes:
    """The kprobes subsystem installed in one Machine (init_kprobes).

    kretprobe_design: "task" (instances keyed by the task, as 2.6.13 shipped) or "stack"
    (the June 2005 original keyed by the return slot's address, four traps per call).
    flush_on_exec: also flush a task's return-probe instances from flush_thread() on the
    exec path, as 2.6.13 did (the known problem); by default only exit flushes.
    """

    def __init__(self, m, kretprobe_design="task", flush_on_exec=False):
        if not isinstance(m, Machine):
            raise KprobesError(f"Kprobes(m) needs an emu.Machine, not {type(m).__name__}")
        if m.extensions.get("kprobes") is not None:
            raise KprobesError("kprobes is already installed on this machine (one Kprobes "
                               "per Machine, as one kprobes subsystem per kernel)")
        if kretprobe_design not in DESIGNS:
            raise KprobesError(f"kretprobe design must be one of {DESIGNS}, not "
                               f"{kretprobe_design!r}")
        self.m = m
        self.table = {}             # probe address -> Kprobe or AggrKprobe
        self.armed = set()          # addresses whose byte is 0xCC now
        # The same by page, each page's sorted: original_bytes() finds a range's
        # breakpoints in the pages it spans, whatever the number armed elsewhere.
        self._armed_pages = {}
        # probe address -> [Kprobe or AggrKprobe]: probes killed with their module's text,
        # oldest first, until unregistered (never in `table`: no trap ever finds them).
        self.gone = {}
        self.slots = InsnSlots(m.insn_area(), arch.MAX_INSN_SIZE)
        # Traps taken, by the kinds the trap path sees rarely (see `traps`).
        self.rare_traps = {"fault": 0, "int3-foreign": 0, "int3-vanished": 0}
        self.curr_kprobe = None     # kprobe_instance: the child whose handler runs in an aggregate
        self._kernel_blacklist = None   # (start, end, why) of the kernel's, found at first use
        self._module_blacklist = None   # the same of the modules loaded now, at first use
        self._enabled = True
        self.arch = arch.arch_init_kprobes(self)
        # The guest kernel's own kprobes (Linux's), which may share addresses with ours.
        guest = m.guest_kprobes()
        self.guest_kprobes = arch.GuestKprobes(self, guest) if guest is not None else None
        if guest is not None:       # hits handed on to the guest's own kprobes
            self.rare_traps["int3-shared"] = 0
        m.text_originals.append(self.original_byte)
        self.kretprobes = KretprobeManager(self, kretprobe_design, flush_on_exec)
        m.add_module_notifier(self.module_callback)
        m.text_freed_handlers.append(self.text_freed)
        m.extensions["kprobes"] = self

    @property
    def traps(self):
        """Traps taken, by kind: "int3" and "debug" are the two of each probe hit (counted
        by the per-CPU state, in C on the plain hit), "fault" a fault while kprobes ran,
        "int3-foreign" an int3 that is not a probe's, "int3-vanished" one whose probe was
        removed after the CPU trapped on it; on a guest with kprobes of its own (Linux),
        "int3-shared" a hit handed on to the guest's kprobe at the same address."""
        kcb = self.arch.kcb
        return {"int3": kcb.n_int3, "debug": kcb.n_debug, **self.rare_traps}

    def cpu_state(self):
        """The per-CPU kprobes state now: {"running", "status" (kprobe_status by name),
        "current_kprobe", "saved" (the probe a re-entry saved, or None)}."""
        return self.arch.state()

    # -- events -----------------------------------------------------------------------

    def emit(self, kind, **data):
        if self.m.observers:
            self.m.emit("kprobes." + kind, **data)

    def missed(self, p, cause):
        """Count a missed activation of `p` and why."""
        p.nmissed += 1
        p.misses[cause] += 1
        self.emit("miss", probe=p, cause=cause)

    def missed_all(self, p, cause):
        """kprobes_inc_nmissed_count(): a missed activation of the probe at an address --
        every child's, when `p` is an aggregate."""
        for child in (p.children if p.is_aggregate else (p,)):
            self.missed(child, cause)

    # -- lookups ----------------------------------------------------------------------

    def original_byte(self, addr):
        p = self.table.get(addr)
        return p.opcode if p is not None and addr in self.armed else None

    def original_bytes(self, addr, size):
        """Guest text with every armed breakpoint replaced by the byte it covers."""
        data = self.m.mem.read(addr, size)
        end = addr + size
        pages = self._armed_pages
        patched = None
        for page in range(addr >> _PAGE_SHIFT, ((end - 1) >> _PAGE_SHIFT) + 1):
            armed = pages.get(page)
            if armed is None:
                continue
            for a in armed[bisect.bisect_left(armed, addr):bisect.bisect_left(armed, end)]:
                if patched is None:
                    patched = bytearray(data)
                patched[a - addr] = self.table[a].opcode
        return data if patched is None else bytes(patched)

    def original_insn_bytes(self, addr, size):
        """original_bytes(), and where the byte at addr is an armed int3 of the guest
        kernel's own kprobes (not ours), the opcode that kprobe saved."""
        data = self.original_bytes(addr, size)
        if data[0] == 0xCC and addr not in self.armed and self.guest_kprobes is not None:
            opcode = self.guest_kprobes.linux_opcode(addr)
            if opcode is not None:
                data = bytes((opcode,)) + data[1:]
        return data

    def probes(self):
        """Every probe users registered, [GONE] ones included (aggregates expanded into
        their children; the subsystem's own trampoline probe left out)."""
        out = []
        tops = list(self.table.values()) + [t for tops in self.gone.values() for t in tops]
        for p in tops:
            out.extend(c for c in (p.children if p.is_aggregate else [p])
                       if not c.internal)
        return out

    # -- registration -----------------------------------------------------------------

    def blacklisted(self, addr):
        """within_kprobe_blacklist(): the guest's .kprobes.text (trap entry code and what
        runs while a kprobe trap is in progress), the trampoline, and modules'
        .kprobes.text sections; on an image that has them (Linux), also what Linux's
        populate_kprobe_blacklist() adds: its noinstr and entry text (the NMI, #DB and
        #BP entry paths are there) and every NOKPROBE_SYMBOL() function."""
        m = self.m
        if self._kernel_blacklist is None:     # the kernel's, which never move
            self._kernel_blacklist = self._find_kernel_blacklist()
        for lo, hi, why in self._kernel_blacklist:
            if lo <= addr < hi:
                return why
        if self._module_blacklist is None:     # modules' (module_callback() forgets them)
            self._module_blacklist = tuple(
                (start, start + size, f"in {mod.name}'s .kprobes.text")
                for mod in m.loaded_modules()
                for start, size, _flags in (mod.sections.get(".kprobes.text", (0, 0, 0)),)
                if size)
        for lo, hi, why in self._module_blacklist:
            if lo <= addr < hi:
                return why
        return None

    # Sections of the kernel no kprobe may be put in: (start symbol, end symbol, why).
    KERNEL_BLACKLIST_AREAS = (
        ("__kprobes_text_start", "__kprobes_text_end", "in .kprobes.text"),
        ("__noinstr_text_start", "__noinstr_text_end", "in .noinstr.text"),
        ("__entry_text_start", "__entry_text_end", "in .entry.text"),
    )

    def _find_kernel_blacklist(self):
        """(start, end, why) of the kernel's blacklist, read from the image: the areas
        above that it has, kretprobe_trampoline, and the functions its _kprobe_blacklist
        section names (NOKPROBE_SYMBOL(): an array of their addresses between
        __start_kprobe_blacklist and __stop_kprobe_blacklist)."""
        m = self.m
        out = []
        for start, end, why in self.KERNEL_BLACKLIST_AREAS:
            lo, hi = m.symbols.lookup_name(start), m.symbols.lookup_name(end)
            if lo is not None and hi is not None and lo < hi:
                out.append((lo, hi, why))
        tramp = m.symbols.get("kretprobe_trampoline")
        if tramp is not None:
            out.append((tramp.addr, tramp.addr + max(tramp.elf_size, 1),
                        "kretprobe_trampoline"))
        # jump_label_text_reserved(), static_call_text_reserved(): text the kernel itself
        # rewrites would overwrite the breakpoint and leave its saved opcode stale.
        out.extend((lo, hi, f"in {what}, which the kernel patches")
                   for lo, hi, what in m.guest_patched_text())
        lo = m.symbols.lookup_name("__start_kprobe_blacklist")
        hi = m.symbols.lookup_name("__stop_kprobe_blacklist")
        # Init data, which Linux frees after boot: read from the image, not the guest.
        array = m.read_image(lo, hi - lo) if lo is not None and hi is not None else None
        if array is not None:
            for i in range(0, len(array) - 7, 8):
                fn = m.symbols.symbol_at(int.from_bytes(array[i:i + 8], "little"))
                if fn is not None:
                    out.append((fn.addr, fn.addr + max(fn.size, 1), "NOKPROBE_SYMBOL"))
        return tuple(out)

    def blacklist(self):
        """The kprobes/blacklist entries: (start, end, name, why) of every function that
        may not be probed, in address order (Linux prints `0xSTART-0xEND\tNAME`; `why`
        is kpemu's)."""
        out = []
        for fn in self._functions():
            why = self.blacklisted(fn.addr)
            if why:
                out.append((fn.addr, fn.addr + fn.size, fn.name, why))
        return sorted(out)

    def available_functions(self):
        """What can be probed by name (like available_filter_functions): the kernel's
        and the loaded modules' functions outside the blacklist, as (name, module or
        None), in address order."""
        return [(fn.name, fn.module) for fn in self._functions()
                if self.m.is_kernel_text(fn.addr) and not self.blacklisted(fn.addr)]

    def _functions(self):
        """Functions with an ELF size, in address order (labels like _stext, which share
        an address with the function after them, are not functions)."""
        return sorted((fn for fn in self.m.symbols.functions() if fn.elf_size > 0),
                      key=lambda f: (f.addr, f.name))

    def check_address(self, addr):
        """check_kprobe_address_safe() + the arch's can_probe(): EINVAL outside text or
        in the blacklist, then what the arch refuses (a foreign int3, EINVAL; off an
        instruction boundary, EILSEQ)."""
        m = self.m
        if not m.is_kernel_text(addr):
            raise KprobeError(_errno.EINVAL, f"{m.symbols.format(addr)}: not in kernel or "
                              "module text")
        why = self.blacklisted(addr)
        if why:
            raise KprobeError(_errno.EINVAL, f"{m.symbols.format(addr)}: blacklisted ({why})")
        self.arch.can_probe(addr, probed=addr in self.table)

    def kprobe_addr(self, p):
        """_kprobe_addr(): the address `p` asks for, in this machine's symbols."""
        return kprobe_addr(p, self.m.symbols)

    def register_internal(self, p):
        """Register one of the subsystem's own probes (the kretprobe trampoline): no
        blacklist check -- it is on the blacklist precisely so nobody else probes it --
        and it stays armed whatever the global switch says."""
        p.internal = True
        self.arch.prepare(p, p.addr)
        p.owner = self
        self.table[p.addr] = p
        self._arm(p)

    def register_kprobe(self, p):
        if p.registered:
            raise KprobeError(_errno.EINVAL, f"{p!r} is already registered")
        if self.m.extensions.get("kprobes") is not self:
            raise KprobesError("this Kprobes is no longer installed on its machine (an "
                               "m.restore() to a snapshot from before it detached it)")
        check_handlers(p, ("pre_handler", "post_handler", "fault_handler"))
        p.gone = False              # register_kprobe() keeps only the user's DISABLED flag
        addr = self.kprobe_addr(p)
        self.check_address(addr)
        old = self.table.get(addr)
        if old is None:
            self.arch.prepare(p, addr)
            fill_kprobe_addr(p, addr)
            self.table[addr] = p
            if self._enabled and not p.disabled:
                self._arm(p)
        else:
            fill_kprobe_addr(p, addr)
            self._register_aggr(old, p)
        if self.guest_kprobes is not None and self.guest_kprobes.guest.at(addr) is not None:
            self.guest_kprobes.mark(addr)
        p.nmissed = 0
        p.misses.clear()
        p.owner = self
        if self.m.observers:        # (emit() checks too; this spares building its kwargs)
            self.emit("register", probe=p, addr=addr, slot=p.ainsn.slot if p.ainsn else None)
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
        if p.registered and p.gone:
            self._unregister_gone(p)
            return
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
        p.owner = None
        self.emit("unregister", probe=p, addr=p.addr)

    def reprepare(self, top):
        """The guest rewrote the instruction under an armed probe (Linux (un)optimized its
        own kprobe there): copy the instruction the text holds now into a new slot and
        arm again."""
        self._armed_discard(top.addr)
        self.arch.remove(top)
        self.arch.prepare(top, top.addr)
        for child in (top.children if top.is_aggregate else ()):
            child.opcode, child.ainsn = top.opcode, top.ainsn
        self._arm(top)

    def _remove(self, top):
        if top.addr in self.armed:
            self._disarm(top)
        del self.table[top.addr]
        self.arch.remove(top)

    def _unregister_gone(self, p):
        """Unregister a [GONE] probe: it leaves the gone list and nothing is written -- its
        slot went with it and its address may hold another module's text now."""
        tops = self.gone[p.addr]
        top = next(t for t in tops if t is p or (t.is_aggregate and p in t.children))
        if top.is_aggregate:
            top.children.remove(p)
        if top is p or not top.children:
            tops.remove(top)
            if not tops:
                del self.gone[p.addr]
        p.owner = None
        self.emit("unregister", probe=p, addr=p.addr)

    # -- modules ------------------------------------------------------------------------

    def module_callback(self, state, mod):
        """The module notifier (kprobes_module_callback()): when `mod` goes, every probe
        on its memory is killed.  kpemu keeps a module's init sections as long as the
        module, so nothing is killed when it goes LIVE (Linux kills the probes on the
        init text it frees then).  A kretprobe on the module keeps its instances in
        flight, as kill_kprobe() leaves them: only its entry probe goes; unregistering it
        orphans them as usual."""
        self._module_blacklist = None      # a module comes or goes: found again at next use
        if state != MODULE_STATE_GOING:
            return
        for top in [t for addr, t in self.table.items() if mod.contains(addr)]:
            self.kill_kprobe(top)

    def text_freed(self, start, end):
        """The kernel frees the text in [start, end) (Linux's init text, at
        free_initmem()): every probe there is killed, as kprobe_free_init_mem() does --
        [GONE], its byte never written again (the memory will be someone else's)."""
        for top in [t for addr, t in self.table.items() if start <= addr < end]:
            self.kill_kprobe(top)

    def kill_kprobe(self, top):
        """kill_kprobe(): the text under `top` is going away.

          1. it leaves the table and the armed set without a write: the int3 goes with the
             freed text, and restoring the byte later would write into whatever is loaded
             there next;
          2. it and, for an aggregate, each child are marked gone;
          3. its instruction slot is freed (arch remove: nothing runs the copy any more).
        """
        del self.table[top.addr]
        self._armed_discard(top.addr)
        top.gone = True
        for child in (top.children if top.is_aggregate else ()):
            child.gone = True
        if self.curr_kprobe is not None and self.curr_kprobe.addr == top.addr:
            self.curr_kprobe = None
        self.arch.remove(top)
        self.gone.setdefault(top.addr, []).append(top)
        self.emit("gone", addr=top.addr)

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
        self._armed_add(top.addr)
        if self.m.observers:
            self.emit("arm", addr=top.addr, opcode=top.opcode)

    def _disarm(self, top):
        self.arch.disarm(top)
        self._armed_discard(top.addr)
        self.emit("disarm", addr=top.addr, opcode=top.opcode)

    def _armed_add(self, addr):
        if addr not in self.armed:
            self.armed.add(addr)
            bisect.insort(self._armed_pages.setdefault(addr >> _PAGE_SHIFT, []), addr)

    def _armed_discard(self, addr):
        if addr in self.armed:
            self.armed.discard(addr)
            page = self._armed_pages[addr >> _PAGE_SHIFT]
            del page[bisect.bisect_left(page, addr)]
            if not page:
                del self._armed_pages[addr >> _PAGE_SHIFT]

    def disable_kprobe(self, p):
        if not p.registered:
            raise KprobeError(_errno.EINVAL, f"{p!r} is not registered")
        if p.gone:
            return                  # as Linux: a gone probe counts as disabled already
        p.disabled = True
        top = self.table[p.addr]
        if top.disabled and top.addr in self.armed:
            self._disarm(top)

    def enable_kprobe(self, p):
        if not p.registered:
            raise KprobeError(_errno.EINVAL, f"{p!r} is not registered")
        if p.gone:
            raise KprobeError(_errno.EINVAL, f"{p!r}: its text has gone with its module")
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
        """The debugfs kprobes/list text (show_kprobe_addr()): `<addr>  <k|r>  <sym+0xoff>
        <mod> [flags]`, with `[GONE]` for a probe whose module went and `[DISABLED]` for a
        disabled one that has not gone.  Where kallsyms knows no text at the address (a
        gone module's, with nothing loaded there since) the place is `%pS` of the bare
        address, `0x...`."""
        lines = []
        for addr in sorted(set(self.table) | set(self.gone)):
            tops = ([self.table[addr]] if addr in self.table else []) + self.gone.get(addr, [])
            where = self._list_place(addr)
            for top in tops:
                for p in (top.children if top.is_aggregate else [top]):
                    flags = "[GONE]" if p.gone else "[DISABLED]" if p.disabled else ""
                    lines.append(f"{addr:016x}  {p.kind}  {where}{flags}")
        return "\n".join(lines) + ("\n" if lines else "")

    def _list_place(self, addr):
        sym = self.m.symbols.symbol_at(addr) if self.m.is_kernel_text(addr) else None
        if sym is None:
            return f"{addr:#x} "
        return f"{sym.name}+{addr - sym.addr:#x}  {sym.module or ' '} "
