"""8254 programmable interval timer, channel 0 wired to IRQ0, driven by the instruction
count so that ticks land where QEMU's i8254 puts them under `-icount shift=0,sleep=off`
(1 instruction = 1 ns of virtual time).

QEMU does not compute edges in closed form: it samples the channel's OUT pin at a chain of
timer deadlines and raises IRQ0 on each 0 -> 1 change the samples see.  kpemu walks the same
chain (hw/timer/i8254*.c semantics, QEMU 7.2), so the rounding is QEMU's too:
  * at the OUT that loads the count (that OUT included: T0) OUT is sampled at d = 0;
  * d(t) = floor((t - T0) * 1193182 / 10^9) PIT clocks; OUT(d) per mode (mode 2: high only
    when d is a non-zero multiple of the count D);
  * after a sample at t, the next one is at T0 + floor(n * 10^9 / 1193182) ns for the next
    transition clock n the mode gives (mode 2: n = base + D after a high sample, base + D + 1
    otherwise, base = d rounded down to a multiple of D), or t + 1 if that is not later.
In mode 2 this puts edge k before instruction T0 + floor((k*D + 1) * 10^9 / 1193182) (the
rule measured in shared/reference/qemu-dual-boot-notes.md: one PIT clock after each reload),
with QEMU's two exceptions: a count of 1 gives one edge and then OUT stays high (no more
ticks: the 8254 forbids D = 1 in mode 2, QEMU keeps the line high), and an edge whose sample
falls exactly on a nanosecond (k*D or k*D + 1 a multiple of 596591, i.e. after ~0.5 s of
virtual time) is not seen.
"""

PIT_FREQ = 1193182
NS_PER_SEC = 1_000_000_000
NEVER = (1 << 64) - 1


class _Channel:
    def __init__(self):
        self.mode = 0
        self.rw_mode = 3
        self.bcd = 0
        self.count = 0x10000
        self.load_time = None     # T0, or None while the channel has not been loaded
        self.write_state = 3
        self.write_latch = 0
        self.read_state = 3
        self.latched = None       # (value, rw_mode) after a counter-latch command
        self.latch_low = True
        self.sample = None        # time of QEMU's next OUT sample (None: no more changes)
        self.level = 0            # OUT as last sampled (the IRQ line)


def _out(ch, d):
    """The OUT pin d PIT clocks after the load, as QEMU models it."""
    mode, count = ch.mode, ch.count
    if mode == 1:
        return int(d < count)
    if mode == 2:
        return int(d % count == 0 and d != 0)
    if mode == 3:
        return int(d % count < (count + 1) >> 1)
    if mode in (4, 5):
        return int(d == count)
    return int(d >= count)                  # mode 0 (and QEMU's default)


def _next_sample(ch, t):
    """QEMU's next sample time after a sample at `t`, or None (OUT changes no more)."""
    mode, count = ch.mode, ch.count
    d = ((t - ch.load_time) * PIT_FREQ) // NS_PER_SEC
    if mode == 2:
        base = d - d % count
        n = base + count if d == base and d != 0 else base + count + 1
    elif mode == 3:
        base = d - d % count
        half = (count + 1) >> 1
        n = base + half if d - base < half else base + count
    elif mode in (4, 5):
        if d < count:
            n = count
        elif d == count:
            n = count + 1
        else:
            return None
    else:                                   # modes 0 and 1
        if d >= count:
            return None
        n = count
    nt = ch.load_time + (n * NS_PER_SEC) // PIT_FREQ
    return nt if nt > t else t + 1


def _stuck_high(ch, level):
    """OUT is high and no later sample can see it low (mode 2 or 3 with a count of 1)."""
    return level and ch.count == 1 and ch.mode in (2, 3)


class Pit8254:
    PORTS = (0x40, 0x41, 0x42, 0x43)

    def __init__(self, now, raise_irq0):
        self.now = now                  # fn() -> instruction count (ns of virtual time)
        self.raise_irq0 = raise_irq0    # fn(): one edge on IRQ0
        self.channels = [_Channel() for _ in range(3)]
        self.ticks = 0
        self._next_edge = None          # cached next_deadline(), None when unknown

    def ports(self):
        return self.PORTS

    # -- time -------------------------------------------------------------------------

    def next_deadline(self):
        """Instruction count at which channel 0's next IRQ edge is due, or NEVER."""
        if self._next_edge is None:
            ch = self.channels[0]
            t, level, edge = ch.sample, ch.level, NEVER
            while t is not None and not _stuck_high(ch, level):
                out = _out(ch, ((t - ch.load_time) * PIT_FREQ) // NS_PER_SEC)
                if out and not level:
                    edge = t
                    break
                level = out
                t = _next_sample(ch, t)
            self._next_edge = edge
        return self._next_edge

    def fire_due(self, now):
        """Take every OUT sample due at or before `now`, raising an IRQ0 edge for each rise
        (an edge the PIC already latched is lost, as on hardware).  Returns how many edges
        were raised."""
        ch = self.channels[0]
        raised = 0
        while ch.sample is not None and ch.sample <= now and not _stuck_high(ch, ch.level):
            t = ch.sample
            out = _out(ch, ((t - ch.load_time) * PIT_FREQ) // NS_PER_SEC)
            if out and not ch.level:
                self.ticks += 1
                raised += 1
                self.raise_irq0()
            ch.level = out
            ch.sample = _next_sample(ch, t)
            self._next_edge = None
        return raised

    def _pit_clocks(self, ch):
        return ((self.now() - ch.load_time) * PIT_FREQ) // NS_PER_SEC

    def _current_count(self, ch):
        if ch.load_time is None:
            return 0
        d = self._pit_clocks(ch)
        if ch.mode in (0, 1, 4, 5):
            return (ch.count - d) & 0xFFFF
        if ch.mode == 3:
            return ch.count - ((2 * d) % ch.count)
        return ch.count - (d % ch.count)

    # -- ports ------------------------------------------------------------------------

    def _load(self, ch, value):
        ch.count = value or 0x10000
        ch.load_time = self.now()       # the OUT itself is already counted
        # QEMU samples OUT at the load (d = 0: low in every periodic mode).
        ch.level = _out(ch, 0)
        ch.sample = _next_sample(ch, ch.load_time)
        self._next_edge = None

    def write(self, port, size, value):
        value &= 0xFF
        if port == 0x43:
            sel = value >> 6
            if sel == 3:                # read-back: latch counts of the selected channels
                for i in range(3):
                    if value & (2 << i) and not value & 0x20:
                        ch = self.channels[i]
                        ch.latched = self._current_count(ch)
                        ch.latch_low = True
                return
            ch = self.channels[sel]
            access = (value >> 4) & 3
            if access == 0:             # counter latch
                if ch.latched is None:
                    ch.latched = self._current_count(ch)
                    ch.latch_low = True
                return
            ch.rw_mode = access
            ch.read_state = access
            ch.write_state = access
            ch.mode = (value >> 1) & 7
            if ch.mode > 5:
                ch.mode -= 4
            ch.bcd = value & 1
            self._next_edge = None      # later samples see the new mode (as in QEMU)
            return
        ch = self.channels[port - 0x40]
        if ch.write_state == 1:
            self._load(ch, value)
        elif ch.write_state == 2:
            self._load(ch, value << 8)
        elif ch.write_state == 3:
            ch.write_latch = value
            ch.write_state = 4
        else:
            self._load(ch, ch.write_latch | (value << 8))
            ch.write_state = 3

    def read(self, port, size):
        if port == 0x43:
            return 0xFF
        ch = self.channels[port - 0x40]
        count = ch.latched if ch.latched is not None else self._current_count(ch)
        if ch.rw_mode == 1:
            ch.latched = None
            return count & 0xFF
        if ch.rw_mode == 2:
            ch.latched = None
            return (count >> 8) & 0xFF
        if ch.latch_low:
            ch.latch_low = False
            return count & 0xFF
        ch.latch_low = True
        ch.latched = None
        return (count >> 8) & 0xFF
