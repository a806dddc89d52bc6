"""The guest clock: instructions executed, and the ledger of work done on the guest's behalf.

The clock is the instruction count (emu/_fastpath.c counts every instruction Unicorn runs).
Anything the host runs for its own purposes -- a kprobe's int3, a jump out of an instruction
slot, guest code a handler runs through m.call -- is taken back out with discount() or run
under frozen(), so a probed run is scheduled exactly like the unprobed one: the same PIT
ticks at the same guest instructions.  `hidden` totals what was taken out.

Must not import: unicorn, kprobes.
"""

from contextlib import contextmanager


class Clock:
    def __init__(self, engine):
        self._icount = engine.icount
        self.hidden = 0          # instructions executed on the guest's behalf, not counted
        self.idle = 0            # clock advanced by hlt (no instruction ran)

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
        self.hidden += n

    @contextmanager
    def frozen(self):
        """Run guest code for the host (m.call) without advancing the guest clock or
        disturbing the deadline of the run it is nested in."""
        icount = self._icount
        executed, deadline = icount.executed, icount.deadline
        try:
            yield
        finally:
            self.hidden += icount.executed - executed
            icount.executed = executed
            icount.deadline = deadline
