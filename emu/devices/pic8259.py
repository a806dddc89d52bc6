"""The 8259A programmable interrupt controller pair (master 0x20/0x21, slave 0xa0/0xa1,
cascaded on master IRQ2), modelled on the behaviour of QEMU's i8259: ICW1-4 with the vector
base from ICW2, OCW1 masks, OCW2 EOIs (non-specific, specific, rotations), OCW3 register
select, poll and special mask, edge-triggered request latching, fixed priority with
rotation, and delivery only for a request of higher priority than everything in service.
"""


class Pic8259:
    """One 8259A chip."""

    def __init__(self, is_master):
        self.is_master = is_master
        self.elcr = 0
        self.reset()

    def reset(self):
        # Like ICW1: everything but the level-triggered requests is cleared.
        self.last_irr = 0
        self.irr = getattr(self, "irr", 0) & self.elcr
        self.imr = 0
        self.isr = 0
        self.priority_add = 0
        self.irq_base = 0
        self.read_reg_select = 0
        self.poll = False
        self.special_mask = 0
        self.init_state = 0
        self.auto_eoi = 0
        self.rotate_on_auto_eoi = 0
        self.special_fully_nested = 0
        self.init4 = 0
        self.single_mode = 0

    def set_irq(self, irq, level):
        mask = 1 << irq
        if self.elcr & mask:        # level triggered
            if level:
                self.irr |= mask
                self.last_irr |= mask
            else:
                self.irr &= ~mask
                self.last_irr &= ~mask
        elif level:                 # edge triggered: latch a 0 -> 1 transition
            if not self.last_irr & mask:
                self.irr |= mask
            self.last_irr |= mask
        else:
            self.last_irr &= ~mask

    def _priority(self, mask):
        """Priority (0 highest) of the best bit in `mask`, or 8 for none."""
        if mask == 0:
            return 8
        p = 0
        while not mask & (1 << ((p + self.priority_add) & 7)):
            p += 1
        return p

    def get_irq(self):
        """The request this chip would raise now, or -1."""
        prio = self._priority(self.irr & ~self.imr)
        if prio == 8:
            return -1
        in_service = self.isr
        if self.special_mask:
            in_service &= ~self.imr
        if self.special_fully_nested and self.is_master:
            in_service &= ~(1 << 2)
        if prio < self._priority(in_service):
            return (prio + self.priority_add) & 7
        return -1

    def intack(self, irq):
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= 1 << irq
        if not self.elcr & (1 << irq):
            self.irr &= ~(1 << irq)

    def write(self, addr, value):
        """addr 0 = command port, 1 = data port."""
        if addr == 0:
            if value & 0x10:                       # ICW1
                self.reset()
                self.init_state = 1
                self.init4 = value & 1
                self.single_mode = value & 2
            elif value & 0x08:                     # OCW3
                if value & 0x04:
                    self.poll = True
                if value & 0x02:
                    self.read_reg_select = value & 1
                if value & 0x40:
                    self.special_mask = (value >> 5) & 1
            else:                                  # OCW2
                cmd = value >> 5
                if cmd in (0, 4):
                    self.rotate_on_auto_eoi = cmd >> 2
                elif cmd in (1, 5):                # non-specific EOI (and rotate)
                    prio = self._priority(self.isr)
                    if prio != 8:
                        irq = (prio + self.priority_add) & 7
                        self.isr &= ~(1 << irq)
                        if cmd == 5:
                            self.priority_add = (irq + 1) & 7
                elif cmd == 3:                     # specific EOI
                    self.isr &= ~(1 << (value & 7))
                elif cmd == 6:                     # set priority
                    self.priority_add = (value + 1) & 7
                elif cmd == 7:                     # specific EOI and rotate
                    irq = value & 7
                    self.isr &= ~(1 << irq)
                    self.priority_add = (irq + 1) & 7
        else:
            if self.init_state == 0:               # OCW1
                self.imr = value
            elif self.init_state == 1:             # ICW2
                self.irq_base = value & 0xF8
                self.init_state = (3 if self.init4 else 0) if self.single_mode else 2
            elif self.init_state == 2:             # ICW3
                self.init_state = 3 if self.init4 else 0
            else:                                  # ICW4
                self.special_fully_nested = (value >> 4) & 1
                self.auto_eoi = (value >> 1) & 1
                self.init_state = 0

    def read(self, addr):
        if addr == 0:
            if self.poll:
                self.poll = False
                irq = self.get_irq()
                if irq >= 0:
                    self.intack(irq)
                    return irq | 0x80
                return 0
            return self.isr if self.read_reg_select else self.irr
        return self.imr


class PicPair:
    """Master and slave wired like a PC: slave output on master IRQ2."""

    MASTER_PORTS = (0x20, 0x21)
    SLAVE_PORTS = (0xA0, 0xA1)

    def __init__(self):
        self.master = Pic8259(True)
        self.slave = Pic8259(False)

    def ports(self):
        return self.MASTER_PORTS + self.SLAVE_PORTS

    def _update(self):
        self.master.set_irq(2, 1 if self.slave.get_irq() >= 0 else 0)

    def set_irq(self, irq, level):
        if irq >= 8:
            self.slave.set_irq(irq - 8, level)
        else:
            self.master.set_irq(irq, level)
        self._update()

    def pending(self):
        """True when the CPU's INTR line is up."""
        return self.master.get_irq() >= 0

    def acknowledge(self):
        """INTA: the vector to deliver (the spurious IRQ7/15 vector if the request went)."""
        irq = self.master.get_irq()
        if irq >= 0:
            self.master.intack(irq)
            if irq == 2:
                irq2 = self.slave.get_irq()
                if irq2 >= 0:
                    self.slave.intack(irq2)
                else:
                    irq2 = 7
                vector = self.slave.irq_base + irq2
            else:
                vector = self.master.irq_base + irq
        else:
            vector = self.master.irq_base + 7
        self._update()
        return vector

    def write(self, port, size, value):
        chip = self.master if port in self.MASTER_PORTS else self.slave
        chip.write(port & 1, value & 0xFF)
        self._update()

    def read(self, port, size):
        chip = self.master if port in self.MASTER_PORTS else self.slave
        value = chip.read(port & 1)
        self._update()
        return value
