"""The 8259A pair as a PC kernel programs it (ICW1-4, masks, EOI, priorities)."""

from emu.devices.pic8259 import PicPair


def programmed(master_mask=0xFA, slave_mask=0xFF):
    pic = PicPair()
    for port, value in ((0x20, 0x11), (0xA0, 0x11), (0x21, 32), (0xA1, 40), (0x21, 4),
                        (0xA1, 2), (0x21, 1), (0xA1, 1), (0x21, master_mask),
                        (0xA1, slave_mask)):
        pic.write(port, 1, value)
    return pic


def test_icw_sets_vector_base_and_mask():
    pic = programmed()
    assert pic.master.irq_base == 32 and pic.slave.irq_base == 40
    assert pic.read(0x21, 1) == 0xFA and pic.read(0xA1, 1) == 0xFF
    assert not pic.pending()


def test_edge_latched_once_until_acknowledged_and_eoi():
    pic = programmed()
    pic.set_irq(0, 1)
    pic.set_irq(0, 0)
    pic.set_irq(0, 1)          # a second edge while one is latched is lost
    pic.set_irq(0, 0)
    assert pic.pending()
    assert pic.acknowledge() == 32
    assert not pic.pending()
    assert pic.master.isr == 1
    pic.set_irq(0, 1)
    pic.set_irq(0, 0)          # new request, but IRQ0 is in service: not delivered
    assert not pic.pending()
    pic.write(0x20, 1, 0x20)   # non-specific EOI
    assert pic.master.isr == 0
    assert pic.pending() and pic.acknowledge() == 32


def test_masked_request_waits_for_unmask():
    pic = programmed(master_mask=0xFF)
    pic.set_irq(0, 1)
    assert not pic.pending()
    pic.write(0x21, 1, 0xFE)
    assert pic.pending()


def test_priority_and_slave_cascade():
    pic = programmed(master_mask=0x00, slave_mask=0x00)
    pic.set_irq(9, 1)          # slave IRQ1 -> master IRQ2
    pic.set_irq(1, 1)
    assert pic.acknowledge() == 33    # IRQ1 beats IRQ2
    pic.write(0x20, 1, 0x20)
    assert pic.acknowledge() == 41    # then the slave's IRQ9 through the cascade
    assert pic.master.isr == 1 << 2 and pic.slave.isr == 1 << 1


def test_icw1_clears_pending_edges_and_ocw3_reads_isr():
    pic = programmed()
    pic.set_irq(0, 1)
    pic.write(0x20, 1, 0x11)          # re-initialise: the latched edge is gone
    assert pic.master.irr == 0
    pic = programmed()
    pic.set_irq(0, 1)
    pic.acknowledge()
    pic.write(0x20, 1, 0x0B)          # OCW3: read ISR
    assert pic.read(0x20, 1) == 1
    pic.write(0x20, 1, 0x0A)          # OCW3: read IRR
    assert pic.read(0x20, 1) == 0
