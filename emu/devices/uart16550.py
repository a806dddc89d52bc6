"""16550A UART (COM1 at 0x3f8), transmit side as a PC kernel's polling printk uses it.

THR writes go to the console; LSR always reads THRE|TEMT (the host drains a byte at once,
like QEMU's UART with a stdio backend), so a polling putc never spins; the other registers
are latched and read back (DLAB-aware).  No receive path: the guest has no input.
"""

UART_LSR_THRE = 0x20
UART_LSR_TEMT = 0x40


class Uart16550:
    def __init__(self, base=0x3F8, sink=None):
        self.base = base
        self.sink = sink             # fn(bytes) for each byte written, or None
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
        elif reg == 1:
            if self.dlab:
                self.dlm = value
            else:
                self.ier = value & 0x0F
        elif reg == 2:
            self.fcr = value
        elif reg == 3:
            self.lcr = value
        elif reg == 4:
            self.mcr = value & 0x1F
        elif reg == 7:
            self.scr = value

    def read(self, port, size):
        reg = port - self.base
        if reg == 0:
            return self.dll if self.dlab else 0
        if reg == 1:
            return self.dlm if self.dlab else self.ier
        if reg == 2:
            return 0xC1 if self.fcr & 1 else 0x01   # IIR: no interrupt pending
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
