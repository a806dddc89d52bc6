"""The guest clock: instructions executed, and the ledger of work done on the guest's behalf.

The clock is the instruction count (emu/_fastpath.c counts the instructions Unicorn runs, a
translated block at a time, exact wherever a hook or the guest can look at it).
Anything the host runs for its own purposes -- a kprobe's int3, a jump out of an instruction
slot, guest code a handler runs through m.call -- is taken back out with discount() or run
under frozen(), so a probed run is scheduled exactly like the unprobed one: the same PIT
ticks at the same guest instructions.  `hidden` totals what was taken out.  Both live in the
C counter struct (emu/kpemu.h), which C code outside emu may adjust too: kprobes'
trap path takes its int3s out there (`counter`).

Must not import: unicorn, kprobes.
"""

from contextlib import contextmanager


class Clock:
    def __init__(self, engine):
        self._icount = engine.icount
        self.idle = 0            # clock advanced by hlt (no instruction ran)

    @property
    def hidden(self):
        """Instructions executed on the guest's behalf and taken back out of the clock."""
        return self._icount.hidden

    @property
    def counter(self):
        """The C counter struct itself (a ctypes object): for C code that takes host work
        out of the clock without a Python call, as discount() does (keep a reference)."""
        return self._icount

    @property
    def now(self):
        """Guest instructions executed since power-on (what rdtsc returns)."""
        return self._icount.executed

    @property
    def executed(self):
        """Guest instructions really executed (the clock less its hlt jumps)."""
        return self._icount.executed - self.idle

    def advance_idle(self, to):
        """A halted CPU sleeps until `to`: the clock jumps there, nothing executes."""
        if to > self._icount.executed:
            self.idle += to - self._icount.executed
            self._icount.executed = to

    def __int__(self):
        return self._icount.executed

    def __repr__(self):
        return (f"<Clock {self._icount.executed}: {self.executed} insns executed, "
                f"{self.idle} idle, {self.hidden} hidden>")

    def discount(self, n=1):
        """Take back `n` instructions just executed for the host (e.g. an int3 the
        kprobes layer handled).  Runs inside hooks: cheap, no Unicorn call."""
        self._icount.executed -= n
        self._icount.hidden += n

    @contextmanager
    def frozen(self):
        """Run guest code for the host (m.call) without advancing the guest clock or
        disturbing the deadline of the run it is nested in."""
        icount = self._icount
        executed, deadline = icount.executed, icount.deadline
        try:
            yield
        finally:
            icount.hidden += icount.executed - executed
            icount.executed = executed
            icount.deadline = deadline
