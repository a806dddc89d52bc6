"""MC146818 real-time clock and CMOS RAM (ports 0x70 index, 0x71 data), on the guest clock.

The time is a fixed base (BASE_TIME, UTC) plus the instruction clock read as nanoseconds
(1 instruction = 1 ns, as QEMU's `-icount shift=0`), which is what QEMU's RTC gives with
`-rtc base=...,clock=vm`: every run reads the same dates at the same instructions.  Registers
as a PC kernel uses them (Linux's mc146818_get_time, its CMOS probe):
  * 0x00-0x09 seconds .. year, BCD or binary and 12/24 h as register B says; 0x32 century;
  * A: UIP (bit 7) is set during the 244 us before each second's update, as the chip sets
    it, so a reader that waits for it to clear waits at most that long; the divider and
    rate bits are latched;
  * B: SET (bit 7) freezes the clock for the guest to write it; DM (bit 2) binary, 24/12
    (bit 1); the interrupt enables are latched (no RTC interrupt is modelled: IRQ8 stays low);
  * C: interrupt flags, cleared by reading (always 0 here); D: VRT (valid RAM and time);
  * 0x0e-0x7f: battery-backed CMOS bytes, read and written as given.
Bit 7 of the index port is the NMI mask (kept, no NMI exists).
"""

import calendar
from datetime import datetime, timezone

BASE_TIME = calendar.timegm((2026, 12, 1, 0, 0, 0))
NS_PER_SEC = 1_000_000_000
UIP_NS = 244_000                  # update-in-progress window before each second
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
REG_B_SET, REG_B_DM, REG_B_24H = 0x80, 0x04, 0x02
REG_A_UIP = 0x80
REG_D_VRT = 0x80
REG_CENTURY = 0x32
TIME_REGS = (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09)   # sec min hour wday mday mon year


def _bcd(value):
    return (value // 10) << 4 | value % 10


class Rtc:
    def __init__(self, now, base_time=BASE_TIME):
        self.now = now                # fn() -> the guest clock (instructions = ns)
        self.base_time = base_time
        self.index = 0
        self.nmi_masked = False
        self.cmos = bytearray(128)
        self.cmos[REG_A] = 0x26       # 32.768 kHz divider, 1.024 kHz rate
        self.cmos[REG_B] = REG_B_24H
        self.cmos[REG_D] = REG_D_VRT
        self.frozen = None            # the time (s) while SET holds the clock
        self.offset = 0               # seconds the guest moved the clock by writing it

    def ports(self):
        return (0x70, 0x71)

    def seconds(self):
        if self.frozen is not None:
            return self.frozen
        return self.base_time + self.offset + self.now() // NS_PER_SEC

    def _time_fields(self):
        tm = datetime.fromtimestamp(self.seconds(), tz=timezone.utc)
        hour = tm.hour
        b = self.cmos[REG_B]
        pm = 0
        if not b & REG_B_24H:
            pm = 0x80 if hour >= 12 else 0
            hour = hour % 12 or 12
        values = {0x00: tm.second, 0x02: tm.minute, 0x04: hour, 0x06: tm.isoweekday() % 7 + 1,
                  0x07: tm.day, 0x08: tm.month, 0x09: tm.year % 100,
                  REG_CENTURY: tm.year // 100}
        conv = (lambda v: v) if b & REG_B_DM else _bcd
        out = {reg: conv(v) for reg, v in values.items()}
        out[0x04] |= pm
        return out

    def write(self, port, size, value):
        value &= 0xFF
        if port == 0x70:
            self.index = value & 0x7F
            self.nmi_masked = bool(value & 0x80)
            return
        reg = self.index
        if reg == REG_B:
            if value & REG_B_SET and self.frozen is None:
                self.frozen = self.seconds()
            elif not value & REG_B_SET and self.frozen is not None:
                # the guest set the clock: keep what it wrote, running from now
                self.cmos[REG_B] = value
                self.frozen = None
                self.offset += self._written_seconds() - self.seconds()
            self.cmos[REG_B] = value
        elif reg == REG_A:
            self.cmos[REG_A] = value & 0x7F          # UIP is read-only
        elif reg in (REG_C, REG_D):
            pass                                     # read-only
        elif reg in TIME_REGS or reg == REG_CENTURY:
            if self.frozen is not None:
                self.cmos[reg] = value
        else:
            self.cmos[reg] = value

    def _written_seconds(self):
        """The time the guest wrote into the time registers while SET held the clock."""
        conv = (lambda v: v) if self.cmos[REG_B] & REG_B_DM else \
            (lambda v: (v >> 4) * 10 + (v & 0xF))
        c = self.cmos
        hour = conv(c[0x04] & 0x7F)
        if not c[REG_B] & REG_B_24H:
            hour = hour % 12 + (12 if c[0x04] & 0x80 else 0)
        year = conv(c[REG_CENTURY]) * 100 + conv(c[0x09])
        return calendar.timegm((year, conv(c[0x08]), conv(c[0x07]), hour, conv(c[0x02]),
                                conv(c[0x00])))

    def read(self, port, size):
        if port == 0x70:
            return 0xFF                              # the index port reads back nothing
        reg = self.index
        if reg == REG_A:
            uip = 0
            if self.frozen is None and self.now() % NS_PER_SEC >= NS_PER_SEC - UIP_NS:
                uip = REG_A_UIP
            return self.cmos[REG_A] | uip
        if reg == REG_C:
            value, self.cmos[REG_C] = self.cmos[REG_C], 0
            return value
        if (reg in TIME_REGS or reg == REG_CENTURY) and self.frozen is None:
            return self._time_fields()[reg]
        return self.cmos[reg]
