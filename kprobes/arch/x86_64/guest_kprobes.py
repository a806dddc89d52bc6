"""kprobes, x86_64: two int3s at one address -- kpemu's and the guest kernel's own (Linux's
kprobes), the rule of docs/linux-kprobes.md.  The machine's view of Linux's kprobes
(emu/linux_kprobes.py: its table, and hooks where Linux reads and writes text for them)
calls this client:

  1. Linux prepares on the original text: while Linux's arch_prepare_kprobe() runs, the
     kpemu probes in the function it probes are disarmed (the original bytes are back),
     and re-armed when it returns;
  2. a hit on an address where Linux has an armed int3 (trap.py asks `shared_at`) runs
     kpemu's pre_handler and then goes to Linux's #BP handler;
  3. Linux's text writes never erase kpemu's int3: at each text_poke_sync() a kpemu probe
     whose byte the guest rewrote is armed again (the same instruction) or prepared anew
     from the text the guest left (a different one: Linux (un)optimized there);
  4. no jump optimization over a kpemu probe: Linux's arch_prepare_optimized_kprobe()
     fails (-EILSEQ, as can_optimize() refusing) when kpemu has a probe in the 5 bytes
     its jmp would cover.

Context: the hooks run inside emu_start (host hooks at function entries: no guest time).
"""

from kprobes.arch.x86_64.insn import BREAKPOINT_INSTRUCTION

JMP32_INSN_SIZE = 5


class GuestKprobes:
    """The client of the guest's own kprobes for one Kprobes (kprobes.Kprobes)."""

    def __init__(self, core, guest):
        self.core = core
        self.m = core.m
        self.guest = guest              # emu.linux_kprobes.LinuxKprobes
        self._lent = []                 # addresses disarmed while Linux prepares
        self.rearmed = 0                # kpemu int3s put back after a guest text write
        self.reprepared = 0             # ... whose instruction the guest had changed
        self.refused_optimizations = 0
        guest.client = self

    def _installed(self):
        return self.m.extensions.get("kprobes") is self.core

    # -- what the arch asks -----------------------------------------------------------

    def shared_at(self, addr):
        """Linux's kprobe at addr if it is armed as an int3 there now, else None."""
        return self.guest.armed_at(addr)

    def linux_opcode(self, addr):
        """The byte Linux's armed int3 at addr covers (its saved opcode), or None."""
        kp = self.guest.armed_at(addr)
        return kp.opcode if kp is not None else None

    def mark(self, addr):
        """Linux has a probe at addr: kpemu's probe there (if any) takes the Python path."""
        top = self.core.table.get(addr)
        if top is not None:
            top.guest_shared = True
            for child in (top.children if top.is_aggregate else ()):
                child.guest_shared = True

    # -- step 1 -----------------------------------------------------------------------

    def guest_prepares(self, addr):
        if not self._installed():
            return
        self.mark(addr)
        sym = self.m.symbols.symbol_at(addr)
        lo, hi = (sym.addr, sym.addr + max(sym.size, 1)) if sym is not None else \
            (addr, addr + 1)
        core = self.core
        for a in sorted(a for a in core.armed if lo <= a < hi):
            self.m.text_poke(a, bytes((core.table[a].opcode,)))
            self._lent.append(a)

    def guest_prepared(self, addr):
        if not self._installed():
            self._lent.clear()
            return
        core = self.core
        for a in self._lent:
            if a in core.armed:
                self.m.text_poke(a, bytes((BREAKPOINT_INSTRUCTION,)))
        self._lent.clear()

    # -- step 3 -----------------------------------------------------------------------

    def guest_text_synced(self):
        if not self._installed() or self._lent:
            return
        core = self.core
        mem = self.m.mem
        for addr in sorted(core.armed):
            top = core.table[addr]
            if top.internal:
                continue
            byte = mem.read(addr, 1)[0]
            if byte == BREAKPOINT_INSTRUCTION:
                continue
            ainsn = top.ainsn
            tail = mem.read(addr + 1, max(ainsn.length - 1, 0))
            if byte == top.opcode and tail == ainsn.insn[1:ainsn.length]:
                self.m.text_poke(addr, bytes((BREAKPOINT_INSTRUCTION,)))
                self.rearmed += 1
            else:
                core.reprepare(top)
                self.reprepared += 1

    # -- step 4 -----------------------------------------------------------------------

    def guest_may_optimize(self, addr):
        if not self._installed():
            return True
        if any(a in self.core.table for a in range(addr, addr + JMP32_INSN_SIZE)):
            self.refused_optimizations += 1
            return False
        return True
