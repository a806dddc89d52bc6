"""isa-debug-exit (QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=0x04`): a write of
`v` powers the machine off.  QEMU exits with status (v << 1) | 1; kpemu reports `v`."""


class DebugExit:
    def __init__(self, on_exit, base=0xF4):
        self.base = base
        self.on_exit = on_exit

    def ports(self):
        return range(self.base, self.base + 4)

    def write(self, port, size, value):
        self.on_exit(value & ((1 << (8 * size)) - 1))

    def read(self, port, size):
        return (1 << (8 * size)) - 1
