"""Linux's own kprobes, as the host sees them: where they are (its `kprobe_table`, read
with the `struct kprobe` offsets of offsets.json) and host hooks at the places where
Linux reads or rewrites text for them -- what a second kprobes implementation (kpemu's)
needs to share an address with Linux's (docs/linux-kprobes.md, "Two int3s at one
address").  The machine knows nothing of kpemu's probes: it calls its `client` (set by
the layer above, kprobes) and the client decides.

Hooks (entry hooks: no guest time), each calling the client if there is one:

  * arch_prepare_kprobe(p) entered, and the same call returned (a hook at each return
    site in its callers, matched by the stack pointer): client.guest_prepares(addr) and
    client.guest_prepared(addr) -- Linux is about to read the text at p->addr and save
    its opcode;
  * text_poke_sync() entered: client.guest_text_synced() -- Linux has just written text
    (its kprobes' arm, disarm, (un)optimize, its static calls, ...);
  * optimize_kprobe(p) entered, and returned: client.guest_may_optimize(addr); False
    clears Linux's kprobes_allow_optimization for that one call (restored when it
    returns), so Linux takes its own "not ready for optimization" branch and keeps its
    probe at addr an int3.
"""

KPROBE_FLAG_GONE = 1
KPROBE_FLAG_DISABLED = 2
KPROBE_FLAG_OPTIMIZED = 4
KPROBE_HASH_BITS = 6                    # kernel/kprobes.c: KPROBE_TABLE_SIZE 64
GOLDEN_RATIO_64 = 0x61C8864680B583EB    # include/linux/hash.h
_MASK64 = (1 << 64) - 1
_CALL_REL32 = 0xE8
# Where Linux calls arch_prepare_kprobe and optimize_kprobe (a `call` in each; the tests
# check them against the image).
PREPARE_CALLERS = ("register_kprobe",)
OPTIMIZE_CALLERS = ("register_kprobe", "arm_kprobe", "__disable_kprobe",
                    "__unregister_kprobe_top", "optimize_all_kprobes")


def hash_ptr(addr, bits=KPROBE_HASH_BITS):
    """hash_ptr() of a 64-bit kernel: hash_64(val, bits)."""
    return ((addr * GOLDEN_RATIO_64) & _MASK64) >> (64 - bits)


class GuestKprobe:
    """One of Linux's kprobes at an address (the table's entry: an aggregate when Linux
    has several there): its flags and the opcode it saved."""

    __slots__ = ("addr", "flags", "opcode", "struct")

    def __init__(self, addr, flags, opcode, struct):
        self.addr, self.flags, self.opcode, self.struct = addr, flags, opcode, struct

    @property
    def optimized(self):
        return bool(self.flags & KPROBE_FLAG_OPTIMIZED)

    @property
    def enabled(self):
        return not self.flags & (KPROBE_FLAG_GONE | KPROBE_FLAG_DISABLED)


def call_sites(machine, caller, callee):
    """Return addresses of every `call callee` (rel32) in `caller`'s text."""
    sym = machine.symbols.get(caller)
    target = machine.symbols.lookup_name(callee)
    code = machine.read_image(sym.addr, sym.size) if sym is not None else None
    out = []
    for i in range(len(code or b"") - 4):
        if code[i] == _CALL_REL32:
            rel = int.from_bytes(code[i + 1:i + 5], "little", signed=True)
            if sym.addr + i + 5 + rel == target:
                out.append(sym.addr + i + 5)
    return out


class LinuxKprobes:
    """Linux's kprobes in one Linux machine (see the top of this file)."""

    def __init__(self, machine, offsets):
        self.m = machine
        sym = machine.symbols.lookup_name
        self.table = sym("kprobe_table")
        self.all_disarmed = sym("kprobes_all_disarmed")
        self.off_hlist = offsets["hlist"]
        self.off_addr = offsets["addr"]
        self.off_flags = offsets["flags"]
        self.off_opcode = offsets["opcode"]
        self.client = None
        self._preparing = []            # (p->addr, sp at return) of arch_prepare_kprobe calls
        self._vetoing = []              # (allow_optimization before, sp at return)
        self.allow_optimization = sym("kprobes_allow_optimization")
        self.prepare_returns = self._hook_call("arch_prepare_kprobe", PREPARE_CALLERS,
                                               self._prepare_entered, self._prepare_returned)
        self.optimize_returns = self._hook_call("optimize_kprobe", OPTIMIZE_CALLERS,
                                                self._optimize_entered,
                                                self._optimize_returned)
        machine.engine.add_entry_hook(sym("text_poke_sync"), self._text_synced)

    def _hook_call(self, callee, callers, entered, returned):
        """Hooks at the entry of `callee` and at the return site of each of its calls in
        `callers`; the return sites, in order."""
        eng = self.m.engine
        eng.add_entry_hook(self.m.symbols.lookup_name(callee), entered)
        sites = sorted({site for caller in callers
                        for site in call_sites(self.m, caller, callee)})
        for site in sites:
            eng.add_entry_hook(site, returned)
        return sites

    # -- reading Linux's table --------------------------------------------------------

    def at(self, addr):
        """get_kprobe(addr): Linux's kprobe at addr (a GuestKprobe), or None."""
        mem = self.m.mem
        node = mem.u64(self.table + 8 * hash_ptr(addr))
        seen = 0
        while node and seen < 4096:
            kp = node - self.off_hlist
            if mem.u64(kp + self.off_addr) == addr:
                flags = int.from_bytes(mem.read(kp + self.off_flags, 4), "little")
                return GuestKprobe(addr, flags, mem.read(kp + self.off_opcode, 1)[0], kp)
            node = mem.u64(node)
            seen += 1
        return None

    def armed_at(self, addr):
        """Linux's kprobe at addr when it is armed as an int3 (enabled, not optimized,
        kprobes not all disarmed), else None."""
        kp = self.at(addr)
        if kp is None or not kp.enabled or kp.optimized or \
                self.m.mem.read(self.all_disarmed, 1)[0]:
            return None
        return kp

    # -- hooks (inside emu_start) -----------------------------------------------------

    def _prepare_entered(self):
        p, sp = self.m.engine.regs(("di", "sp"))
        addr = self.m.mem.u64(p + self.off_addr)
        self._preparing.append((addr, sp + 8))
        if self.client is not None:
            self.client.guest_prepares(addr)

    def _prepare_returned(self):
        if self._preparing and self._preparing[-1][1] == self.m.engine.reg("sp"):
            addr, _ = self._preparing.pop()
            if self.client is not None:
                self.client.guest_prepared(addr)

    def _text_synced(self):
        if self.client is not None:
            self.client.guest_text_synced()

    def _optimize_entered(self):
        if self.client is None:
            return
        p, sp = self.m.engine.regs(("di", "sp"))
        mem = self.m.mem
        if not self.client.guest_may_optimize(mem.u64(p + self.off_addr)):
            self._vetoing.append((mem.read(self.allow_optimization, 1), sp + 8))
            mem.write(self.allow_optimization, b"\0")

    def _optimize_returned(self):
        if self._vetoing and self._vetoing[-1][1] == self.m.engine.reg("sp"):
            before, _ = self._vetoing.pop()
            self.m.mem.write(self.allow_optimization, before)
