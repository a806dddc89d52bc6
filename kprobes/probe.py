"""The probe objects of the generic core (struct kprobe and what kernel/kprobes.c keeps
beside it): Kprobe, the aggregate that takes over an address probed twice, the
instruction-slot allocator, and kprobe_addr(), which turns what a probe asks for into an
address.

Plain data and the aggregate's dispatch to its children; no registry, no arch code (the
slot size comes from the arch through the core), no trap path.

Must not import: unicorn, kprobes.core, kprobes.arch.
"""

import errno as _errno
from collections import Counter
from dataclasses import dataclass

from emu.module_area import AreaFull
from kprobes.errors import KprobeError

PAGE_SIZE = 4096


class Kprobe:
    """struct kprobe: where to probe and what to call.

    pre_handler(p, regs) -> int   non-zero: "I changed regs.ip, do not single-step"
    post_handler(p, regs, flags)  after the single-step; regs.ip is still in the slot
    fault_handler(p, regs, trapnr) -> int   non-zero: fault handled
    """

    # What every hit reads is kept in slots, which the C trap path (trap.c) reads at their
    # offsets instead of looking each up by name; the rest is in the __dict__ as usual.
    __slots__ = ("pre_handler", "post_handler", "ainsn", "disabled", "guest_shared",
                 "__dict__", "__weakref__")

    is_aggregate = False
    internal = False
    kretprobe = None
    resume_in_post_handler = False
    kind = "k"
    # KPROBE_FLAG_GONE: the module holding its text was unloaded; it stays registered (and
    # listed) until unregistered, never armed or written again.
    gone = False

    def __init__(self, addr=None, symbol_name=None, offset=0, pre_handler=None,
                 post_handler=None, fault_handler=None):
        self.addr = addr
        self.symbol_name = symbol_name
        self.offset = offset
        self.pre_handler = pre_handler
        self.post_handler = post_handler
        self.fault_handler = fault_handler
        # What the user asked (disable_kprobe); an aggregate derives it.
        self.disabled = False
        # The guest kernel's own kprobes have (had) a probe at this address: every hit
        # takes the Python trap path, which asks Linux's table (arch's guest_kprobes.py).
        self.guest_shared = False
        self.nmissed = 0
        self.misses = Counter()      # nmissed by cause
        self.opcode = None           # the byte the int3 replaced
        self.ainsn = None            # arch data: the out-of-line copy
        self.owner = None            # the Kprobes it is registered with
        # What registration wrote back into addr, and the addr the caller had given then
        # (None for a symbol_name probe): what kprobe_addr() asks for again next time.
        self._filled_addr = None
        self._asked_addr = None

    @property
    def registered(self):
        return self.owner is not None

    def __repr__(self):
        where = (f"{self.symbol_name}+{self.offset:#x}" if self.symbol_name
                 else f"{self.addr:#x}" if self.addr is not None else "?")
        state = " gone" if self.gone else " disabled" if self.disabled else ""
        return f"<{type(self).__name__} {where}{state} nmissed={self.nmissed}>"


def kprobe_addr(p, symbols):
    """_kprobe_addr(): the address probe `p` asks for -- addr, or symbol_name + offset,
    looked up in `symbols`.  An addr that an earlier registration filled in stands for
    what was asked then (nothing, for a symbol_name probe; the caller's addr otherwise),
    so an unregistered probe registers again as it first did.  KprobeError EINVAL for both
    or neither, ENOENT for an unknown symbol."""
    addr = _asked_addr(p)
    name = p.symbol_name
    if addr is not None and (not isinstance(addr, int) or isinstance(addr, bool)):
        raise KprobeError(_errno.EINVAL, f"addr must be an integer, not {type(addr).__name__}")
    if name is not None and not isinstance(name, str):
        raise KprobeError(_errno.EINVAL, "symbol_name must be a string, not "
                          f"{type(name).__name__}")
    if not isinstance(p.offset, int) or isinstance(p.offset, bool):
        raise KprobeError(_errno.EINVAL, "offset must be an integer, not "
                          f"{type(p.offset).__name__}")
    if (addr is None) == (name is None):
        raise KprobeError(_errno.EINVAL, "give either addr or symbol_name, not "
                          + ("both" if addr is not None else "neither"))
    if name is not None:
        base = symbols.lookup_name(name)
        if base is None:
            raise KprobeError(_errno.ENOENT, f"unknown symbol '{name}'")
        return base + p.offset
    return addr + p.offset


def check_handlers(obj, names):
    """EINVAL unless each of obj's handlers `names` is None or callable (a handler that
    is not would fail only at the first hit, inside the trap)."""
    for name in names:
        handler = getattr(obj, name)
        if handler is not None and not callable(handler):
            raise KprobeError(_errno.EINVAL, f"{obj!r}: {name} must be callable or None, "
                              f"not {type(handler).__name__}")


def _asked_addr(p):
    """The addr the caller asked for: p.addr, unless it is what registration filled in."""
    return p._asked_addr if p.addr is not None and p.addr == p._filled_addr else p.addr


def fill_kprobe_addr(p, addr):
    """Write the resolved address back into p.addr, remembering what was asked."""
    p._asked_addr = _asked_addr(p)
    p.addr = p._filled_addr = addr


class AggrKprobe(Kprobe):
    """The manager probe that takes a second probe's address over: it holds the slot and
    calls its children in order (newest first, as 2.6.13's list_add_rcu at the head),
    stopping at the first pre_handler that returns non-zero.

    While a child's handler runs, `core.curr_kprobe` names it (kprobe_instance), so a
    fault or an exception is the child's.  The handlers clear it when they return; when a
    child's handler raises it stays set for the trap path, which clears it once it has
    handled the exception."""

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
        return all(c.disabled for c in self.children)

    @disabled.setter
    def disabled(self, value):
        # Only Kprobe.__init__'s default comes here: an aggregate has no flag of its own.
        if value:
            raise AttributeError("an aggregate is disabled by disabling all its children")

    def aggr_pre_handler(self, _p, regs):
        core = self.core
        for kp in list(self.children):
            if kp.pre_handler is not None and not kp.disabled:
                core.curr_kprobe = kp
                if kp.pre_handler(kp, regs):
                    core.curr_kprobe = None
                    return 1
            core.curr_kprobe = None
        return 0

    def aggr_post_handler(self, _p, regs, flags):
        core = self.core
        for kp in list(self.children):
            if kp.post_handler is not None and not kp.disabled:
                core.curr_kprobe = kp
                kp.post_handler(kp, regs, flags)
        core.curr_kprobe = None

    def aggr_fault_handler(self, _p, regs, trapnr):
        cur = self.core.curr_kprobe
        if cur is not None and cur.fault_handler is not None:
            return cur.fault_handler(cur, regs, trapnr)
        return 0


@dataclass(slots=True)
class SlotPage:
    """One executable page of instruction slots."""
    base: int              # its address
    used: bytearray        # one flag per slot
    nused: int = 0


class InsnSlots:
    """Executable instruction slots (get_insn_slot/free_insn_slot of kernel/kprobes.c):
    pages of `slot_size`-byte slots (the arch's MAX_INSN_SIZE) from the module area,
    within +-2 GiB of kernel and module text so a %rip-relative displacement can be
    re-targeted.  An emptied page is given back unless it is the only one."""

    def __init__(self, area, slot_size):
        self.area = area
        self.slot_size = slot_size
        self.per_page = PAGE_SIZE // slot_size
        self.pages = []     # SlotPage, the newest first
        self._by_base = {}  # page address -> SlotPage: a slot's page without a search

    def get_insn_slot(self):
        for page in self.pages:
            if page.nused < self.per_page:
                i = page.used.index(0)
                page.used[i] = 1
                page.nused += 1
                return page.base + i * self.slot_size
        try:
            base = self.area.alloc(PAGE_SIZE, PAGE_SIZE, tag="kprobe insn page")
        except AreaFull as exc:
            raise KprobeError(_errno.ENOMEM, f"no memory for an instruction slot: {exc}") \
                from None
        page = SlotPage(base, bytearray(self.per_page), 1)
        page.used[0] = 1
        self.pages.insert(0, page)
        self._by_base[base] = page
        return base

    def free_insn_slot(self, slot):
        page = self._by_base.get(slot - slot % PAGE_SIZE)     # pages are page-aligned
        if page is None:
            raise ValueError(f"{slot:#x} is not an instruction slot")
        page.used[(slot - page.base) // self.slot_size] = 0
        page.nused -= 1
        if page.nused == 0 and len(self.pages) > 1:
            self.pages.remove(page)
            del self._by_base[page.base]
            self.area.free(page.base)

    @property
    def used(self):
        return sum(p.nused for p in self.pages)
