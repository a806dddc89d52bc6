"""PC devices, host side, each behaving like QEMU's model of it so the same kernel prints
the same bytes on both machines.  A device sees port reads and writes and, for the PIT, the
clock; it raises interrupt lines on the PIC.  Devices never import unicorn or kprobes."""
