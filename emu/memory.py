"""Guest memory as the host sees it: physical RAM and virtual addresses through the guest's
own page tables.

With paging on, Unicorn's mem_read/mem_write take physical addresses; the kernel runs at
virtual ones.  One translation layer serves every host access: plain arithmetic on the RAM
buffer for the kernel mapping (VA = PA + __START_KERNEL_map, checked against the guest's page
tables at boot), and the host's own walk of the guest's 4-level page tables (walk()) for
anything else.  Not Unicorn's uc_vmem_translate: it translates with the CPU's current
privilege, so while user code runs it refuses the kernel's own pages.  Writes to code go
through text_poke(), which also drops translated blocks.

Must not import: unicorn (engine does), kprobes.
"""

import struct

from emu.errors import MemoryFault

PAGE_SIZE = 0x1000
START_KERNEL_MAP = 0xFFFFFFFF80000000

PTE_PRESENT = 0x1
PTE_PSE = 0x80                        # a 1 GiB (PDPTE) or 2 MiB (PDE) page
PTE_ADDR = 0x000FFFFFFFFFF000
X86_CR0_PG = 0x80000000
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class Memory:
    def __init__(self, engine):
        self.engine = engine
        self.ram = engine.ram
        self.ram_size = engine.ram_size
        self.kernel_map = START_KERNEL_MAP
        # Set by the machine once the guest's page tables are known to map the kernel
        # region linearly; before that (or outside it) every access walks the tables.
        self.kernel_map_checked = False

    # -- translation -----------------------------------------------------------------

    def pa(self, va, access="read"):
        """Physical address of `va`, or MemoryFault."""
        off = va - self.kernel_map
        if self.kernel_map_checked and 0 <= off < self.ram_size:
            return off
        pa = self.walk(va)
        if pa is None or pa >= self.ram_size:
            raise MemoryFault(va, access)
        return pa

    def walk(self, va):
        """Physical address of `va` through the guest's page tables (CR3), with the
        kernel's rights whatever the CPU's mode; None when it is not mapped.  With paging
        off, virtual is physical."""
        cr0, cr3 = self.engine.regs(("cr0", "cr3"))
        if not cr0 & X86_CR0_PG:
            return va if 0 <= va < self.ram_size else None
        canonical = va >> 47
        if canonical not in (0, 0x1FFFF):
            return None
        table = cr3 & PTE_ADDR
        for shift in (39, 30, 21, 12):
            at = table + ((va >> shift) & 0x1FF) * 8
            if at + 8 > self.ram_size:
                return None
            entry = _U64.unpack_from(self.ram, at)[0]
            if not entry & PTE_PRESENT:
                return None
            if shift in (30, 21) and entry & PTE_PSE:
                mask = (1 << shift) - 1
                return (entry & PTE_ADDR & ~mask) | (va & mask)
            table = entry & PTE_ADDR
        return table | (va & 0xFFF)

    def _ranges(self, va, size, access):
        """(pa, length) pieces of [va, va+size), split at page boundaries."""
        off = va - self.kernel_map
        if self.kernel_map_checked and 0 <= off and off + size <= self.ram_size:
            return ((off, size),)
        pieces = []
        while size > 0:
            n = min(size, PAGE_SIZE - (va & (PAGE_SIZE - 1)))
            pieces.append((self.pa(va, access), n))
            va += n
            size -= n
        return pieces

    def mapped(self, va):
        try:
            self.pa(va)
            return True
        except MemoryFault:
            return False

    # -- access by virtual address ---------------------------------------------------

    def read(self, va, size):
        ram = self.ram
        off = va - self.kernel_map
        if self.kernel_map_checked and 0 <= off and off + size <= self.ram_size:
            return ram[off:off + size]        # the kernel mapping: no walk, no join
        return b"".join(ram[pa:pa + n] for pa, n in self._ranges(va, size, "read"))

    def write(self, va, data):
        data = bytes(data)
        off = va - self.kernel_map
        if self.kernel_map_checked and 0 <= off and off + len(data) <= self.ram_size:
            self.ram[off:off + len(data)] = data      # the kernel mapping: no walk
            return
        pos = 0
        for pa, n in self._ranges(va, len(data), "write"):
            self.ram[pa:pa + n] = data[pos:pos + n]
            pos += n

    def u64(self, va):
        return _U64.unpack_from(self.ram, self.pa(va))[0] if (va & 7) == 0 else \
            _U64.unpack(self.read(va, 8))[0]

    def set_u64(self, va, value):
        if (va & 7) == 0:
            _U64.pack_into(self.ram, self.pa(va, "write"), value & 0xFFFFFFFFFFFFFFFF)
        else:
            self.write(va, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))

    def u32(self, va):
        return _U32.unpack_from(self.ram, self.pa(va))[0] if (va & 3) == 0 else \
            _U32.unpack(self.read(va, 4))[0]

    # -- physical ---------------------------------------------------------------------

    def read_phys(self, pa, size):
        if pa < 0 or pa + size > self.ram_size:
            raise MemoryFault(pa, "read physical")
        return self.ram[pa:pa + size]

    def write_phys(self, pa, data):
        if pa < 0 or pa + len(data) > self.ram_size:
            raise MemoryFault(pa, "write physical")
        self.ram[pa:pa + len(data)] = bytes(data)

    # -- code -------------------------------------------------------------------------

    def text_poke(self, va, data):
        """Write code at `va` and drop the translated blocks that cover it, so the change
        is seen from the next block boundary on, even from inside a hook while the guest
        runs (like Linux's text_poke(): the only way kpemu writes to text)."""
        self.write(va, data)
        self.engine.flush_code(va, len(data))
