"""16550A UART (COM1 at 0x3f8), transmit side: a polling printk and an interrupt-driven tty.

THR writes go to the console; LSR always reads THRE|TEMT (the host drains a byte at once,
like QEMU's UART with a stdio backend), so a polling putc never spins; the other registers
are latched and read back (DLAB-aware).  No receive path: the guest has no input.

The transmit-holding-register-empty interrupt, as a 16550 (and QEMU's serial.c) raises it:
with IER bit 1 set it is pending whenever THR is empty -- at once when the guest enables
it, and again after each byte (the byte leaves at once) -- until the guest reads IIR with
it as the reported source (IIR 0x02) or writes THR.  While it is pending the IRQ line
(`irq(level)`, IRQ4 on a PC) is high; Linux's 8250 driver sends a tty's output from that
interrupt.
"""

UART_LSR_THRE = 0x20
UART_LSR_TEMT = 0x40
UART_IER_THRI = 0x02
UART_IIR_NO_INT = 0x01
UART_IIR_THRI = 0x02
UART_IIR_FIFO = 0xC0


class Uart16550:
    def __init__(self, base=0x3F8, sink=None, irq=None):
        self.base = base
        self.sink = sink             # fn(bytes) for each byte written, or None
        self.irq = irq               # fn(level): the interrupt line, or None
        self.thr_ipending = False
        self.output = bytearray()
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.fcr = 0
        self.scr = 0
        self.dll = 0x0C              # 9600 baud, the reset divisor
        self.dlm = 0

    def ports(self):
        return range(self.base, self.base + 8)

    @property
    def dlab(self):
        return bool(self.lcr & 0x80)

    def write(self, port, size, value):
        reg = port - self.base
        value &= 0xFF
        if reg == 0:
            if self.dlab:
                self.dll = value
            else:
                self.output.append(value)
                if self.sink is not None:
                    self.sink(bytes((value,)))
                # the write fills THR (no longer empty) and the byte is sent at once:
                # empty again, a new THRE edge (QEMU's serial_xmit)
                self._set_thr_pending(False)
                self._set_thr_pending(bool(self.ier & UART_IER_THRI))
        elif reg == 1:
            if self.dlab:
                self.dlm = value
            else:
                enabled = value & UART_IER_THRI and not self.ier & UART_IER_THRI
                self.ier = value & 0x0F
                if not self.ier & UART_IER_THRI:
                    self._set_thr_pending(False)
                elif enabled:
                    self._set_thr_pending(True)     # THR is empty: pending at once
        elif reg == 2:
            self.fcr = value
        elif reg == 3:
            self.lcr = value
        elif reg == 4:
            self.mcr = value & 0x1F
        elif reg == 7:
            self.scr = value

    def _set_thr_pending(self, pending):
        if pending != self.thr_ipending:
            self.thr_ipending = pending
            if self.irq is not None:
                self.irq(pending)

    def read(self, port, size):
        reg = port - self.base
        if reg == 0:
            return self.dll if self.dlab else 0
        if reg == 1:
            return self.dlm if self.dlab else self.ier
        if reg == 2:
            fifo = UART_IIR_FIFO if self.fcr & 1 else 0
            if self.thr_ipending:
                self._set_thr_pending(False)       # reading IIR acknowledges THRE
                return fifo | UART_IIR_THRI
            return fifo | UART_IIR_NO_INT
        if reg == 3:
            return self.lcr
        if reg == 4:
            return self.mcr
        if reg == 5:
            return UART_LSR_THRE | UART_LSR_TEMT
        if reg == 6:
            # MSR: in loopback the outputs come back as inputs; otherwise DCD|DSR|CTS.
            if self.mcr & 0x10:
                m = self.mcr
                return ((m & 1) << 5) | ((m & 2) << 3) | ((m & 4) << 4) | ((m & 8) << 4)
            return 0xB0
        return self.scr
