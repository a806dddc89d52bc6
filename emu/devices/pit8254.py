"""8254 programmable interval timer, channel 0 wired to IRQ0, driven by the instruction
count so that ticks land where QEMU's i8254 puts them under `-icount shift=0,sleep=off`
(1 instruction = 1 ns of virtual time).

The rule (measured against QEMU, shared/reference/qemu-dual-boot-notes.md): let T0 be the
instruction count at the OUT that loads the count's last byte, that OUT included, and D the
divisor; in mode 2 the k-th IRQ0 edge is taken before instruction
    T0 + floor((k*D + 1) * 10^9 / 1193182).
The +1 is one PIT clock: the output pulses one clock after each reload.
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
        self.edge = 1             # index k of the next IRQ edge


class Pit8254:
    PORTS = (0x40, 0x41, 0x42, 0x43)

    def __init__(self, now, raise_irq0):
        self.now = now                  # fn() -> instruction count (ns of virtual time)
        self.raise_irq0 = raise_irq0    # fn(): one edge on IRQ0
        self.channels = [_Channel() for _ in range(3)]
        self.ticks = 0

    def ports(self):
        return self.PORTS

    # -- time -------------------------------------------------------------------------

    def _edge_time(self, ch, k):
        return ch.load_time + ((k * ch.count + 1) * NS_PER_SEC) // PIT_FREQ

    def next_deadline(self):
        """Instruction count at which channel 0's next IRQ edge is due, or NEVER."""
        ch = self.channels[0]
        if ch.load_time is None or ch.mode not in (0, 2, 3) or (ch.mode == 0 and ch.edge > 1):
            return NEVER
        return self._edge_time(ch, ch.edge)

    def fire_due(self, now):
        """Raise every channel-0 edge due at or before `now` (an edge the PIC already
        latched is lost, as on hardware).  Returns how many edges were raised."""
        raised = 0
        while self.next_deadline() <= now:
            self.channels[0].edge += 1
            self.ticks += 1
            raised += 1
            self.raise_irq0()
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
        ch.edge = 1

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
