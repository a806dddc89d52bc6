"""The Linux guest profile: what the machine must know of a real Linux 6.1 kernel
(kernel_images/linux), and nothing of the toy kernel's contract.

A Linux image is recognised by its `linux_banner` symbol.  Beside it, its directory holds
what the build extracted (kernel_images/linux/Makefile): offsets.json (structure layouts
from the kernel's DWARF), the default command line (`cmdline`) and initramfs
(`initramfs.cpio`).  The profile owns:
  * the PVH entry, done host-side: Linux's pvh_start_xen is 32-bit code, and a 64-bit
    Unicorn keeps its register API 64-bit, so the host does what that code does -- copy the
    hvm_start_info (built as QEMU builds it: e820 map, initrd module, command line) into
    pvh_start_info, load its GDT, stack, PAE, EFER.LME, CR3 = init_top_pgt, paging -- and
    starts the CPU at its 64-bit label, the far jump's target;
  * "booted": the first entry to run_init_process(), where the kernel is up and init is
    about to be executed (a hook on that one address);
  * the kernel's own oops (die(): a fault in the kernel, BUG()): the machine stops at
    oops_end(), once Linux has printed its report, with kpemu's report of the faulting
    context -- the registers of the pt_regs oops_end() is given, the trace unwound from
    them -- and Linux's first line of the report as the message;
  * the kernel's panic: the machine stops with an oops when panic() ends in
    emergency_restart(), the report taken where panic() was entered;
  * syscall (Unicorn does nothing for it): CS/SS from STAR at CPL 0, RCX/R11, RFLAGS masked
    by FMASK, RIP = LSTAR, as the CPU does; sysretq and iretq back to ring 3 are Unicorn's;
  * current (the per-CPU current_task: a plain variable on a UP kernel) and the task list,
    read through the extracted offsets;
  * kpemu's own area (KpemuArea): executable memory for kprobes' instruction slots and
    its kretprobe_trampoline, which Linux neither uses nor sees as RAM, mapped into the
    kernel's page tables when kprobes first asks for it;
  * the init text's end: a host hook at free_initmem() calls the machine's
    text_freed_handlers (kprobes kills its probes there, as kprobe_free_init_mem() does);
  * the task-release notification: a host hook at rethook_flush_task(tsk), where Linux
    itself frees a dead task's return-probe state (delayed_put_task_struct), calls the
    machine's "HC_KPROBE_FLUSH_TASK" handlers as the toy kernel's hypercall does.
CPU exceptions go to Linux's own IDT (it handles its page faults, and #UD is BUG()/WARN());
the machine does that delivery (emu/interrupts.py) with the error code the engine reads.

Must not import: unicorn (emu.engine does), kprobes.
"""

import json
import os
import re
import struct
from types import SimpleNamespace

import capstone

from emu.errors import ImageError, MachineError, MemoryFault
from emu.image import HVM_START_MAGIC, build_boot_info
from emu.interrupts import gdt_flags
from emu.linux_kprobes import LinuxKprobes
from emu.memory import PAGE_SIZE, PTE_ADDR, PTE_PRESENT, PTE_PSE, START_KERNEL_MAP
from emu.module_area import ModuleArea
from emu.oops import REG_ORDER
from emu.tasks import Task, read_comm_pid

OFFSETS_FILE = "offsets.json"
CMDLINE_FILE = "cmdline"
INITRD_FILE = "initramfs.cpio"
FALLBACK_CMDLINE = "console=ttyS0 noapic nolapic panic=-1"
INITRD_MAX_SIZE = 64 << 20

MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_SYSCALL_MASK = 0xC0000084
EFER_SCE = 1
X86_EFLAGS_RF = 0x10000

# The fixed descriptor caches syscall loads (SDM, SYSCALL: a flat 64-bit code segment and
# a flat writable data segment, DPL 0), in QEMU's SegmentCache.flags encoding.
DESC_G, DESC_B, DESC_L, DESC_P, DESC_S = 1 << 23, 1 << 22, 1 << 21, 1 << 15, 1 << 12
DESC_CS, DESC_RW, DESC_A = 1 << 11, 1 << 9, 1 << 8
SYSCALL_CS_FLAGS = DESC_G | DESC_P | DESC_S | DESC_CS | DESC_RW | DESC_A | DESC_L
SYSCALL_SS_FLAGS = DESC_G | DESC_B | DESC_P | DESC_S | DESC_RW | DESC_A

# Where QEMU's PC puts things for a PVH boot of 128 MiB, so the kernel sees the same: the
# e820 map SeaBIOS hands on (the top 128 KiB of RAM and the BIOS flash are reserved), and
# the initrd as high as QEMU's x86 loader puts it (below the 160 KiB it keeps for ACPI data,
# page aligned).  hvm_start_info and the command line are where emu.image puts them.
BIOS_RESERVED_TOP = 0x20000
FLASH_BASE, FLASH_SIZE = 0xFFFC0000, 0x40000
QEMU_ACPI_DATA_SIZE = 0x28000
E820_RAM, E820_RESERVED = 1, 2
MEMMAP_PADDR = 0x6000
MODLIST_PADDR = 0x6800

# kpemu's area (KpemuArea).  Physically: the top BIOS_RESERVED_TOP of RAM, which the e820
# map above already reserves (SeaBIOS's under QEMU), so Linux never allocates it and the
# map it prints stays QEMU's.  Its first page is the page table that maps the rest.
# Virtually: the 2 MiB "unused hole" at the top of x86_64 Linux's address space
# (Documentation/x86/x86_64/mm.rst; level2_fixmap_pgt's last PMD entry, left empty by
# head_64.S), within 2 GiB of the kernel text, reached through the kernel half of the
# top-level table that every process's page tables share.
KPEMU_AREA_VA = 0xFFFFFFFFFFE00000
KPEMU_AREA_SIZE = BIOS_RESERVED_TOP - PAGE_SIZE
KERNPG_TABLE = 0x63            # _KERNPG_TABLE: present, rw, accessed, dirty
PAGE_KERNEL_EXEC = 0x163       # __PAGE_KERNEL_EXEC: present, rw, accessed, dirty, global
TRAMPOLINE = "kretprobe_trampoline"
# Text Linux patches at run time, which its check_kprobe_address_safe() keeps kprobes off
# (jump_label_text_reserved(), static_call_text_reserved()): x86_64's tables hold
# self-relative s32 offsets -- struct jump_entry {s32 code, target; long key} and struct
# static_call_site {s32 addr, key} -- and each site is a 5-byte jmp/nop or call.
PATCHED_SITE_TABLES = (("__start___jump_table", "__stop___jump_table", 16, "a jump label"),
                       ("__start_static_call_sites", "__stop_static_call_sites", 8,
                        "a static call site"))
PATCHED_SITE_SIZE = 5
TRAMPOLINE_SIZE = 16           # the nop, and room nothing else takes
NOP = 0x90


def is_linux(image):
    return any(s.name == "linux_banner" for s in image.symbols)


def image_dir(image):
    return os.path.dirname(os.path.abspath(image.path))


def default_cmdline(image):
    """The command line in the image's directory (`cmdline`), else FALLBACK_CMDLINE."""
    path = os.path.join(image_dir(image), CMDLINE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return FALLBACK_CMDLINE
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"{path}: cannot read the default command line: {exc}") from None


def default_initrd(image):
    """The initramfs in the image's directory, or None."""
    path = os.path.join(image_dir(image), INITRD_FILE)
    return path if os.path.isfile(path) else None


def read_initrd(path):
    try:
        size = os.path.getsize(path)
        if not os.path.isfile(path):
            raise ImageError(f"{path}: the initrd is not a regular file")
        if size > INITRD_MAX_SIZE:
            raise ImageError(f"{path}: initrd of {size} bytes is over the "
                             f"{INITRD_MAX_SIZE >> 20} MiB kpemu loads")
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the initrd: {exc.strerror}") from None


def e820_map(ram_size):
    """(addr, size, type) of the memory map, as SeaBIOS reports it under QEMU."""
    top = ram_size - BIOS_RESERVED_TOP
    return [(0, 0x9FC00, E820_RAM), (0x9FC00, 0x100000 - 0x9FC00, E820_RESERVED),
            (0x100000, top - 0x100000, E820_RAM), (top, BIOS_RESERVED_TOP, E820_RESERVED),
            (FLASH_BASE, FLASH_SIZE, E820_RESERVED)]


def initrd_paddr(ram_size, size):
    """Where QEMU's x86 loader puts an initrd of `size` bytes (load_linux's initrd_max)."""
    initrd_max = ram_size - QEMU_ACPI_DATA_SIZE - 1
    return (initrd_max - size) & ~0xFFF


class LinuxLayout:
    """task_struct and friends, from offsets.json (extracted from the kernel's DWARF)."""

    def __init__(self, image):
        path = os.path.join(image_dir(image), OFFSETS_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            task = data["structs"]["task_struct"]
            self.thread_size = data["thread_size"]
            self.pid = task["pid"]
            self.comm = task["comm"]
            self.comm_len = task["comm_len"]
            self.state = task["__state"]
            self.exit_state = task["exit_state"]
            self.exit_code = task["exit_code"]
            self.stack = task["stack"]
            self.tasks = task["tasks"]
            self.thread_rsp = task["thread.sp"]
            self.kprobe = data["structs"]["kprobe"]
            self.pt_regs = {n: off for n, off in data["structs"]["pt_regs"].items()
                            if n in REG_ORDER}
            self.state_names = [s.split("(", 1)[1].rstrip(")") for s in data["task_state_array"]]
            current = data["per_cpu"]["current_task"]
        except FileNotFoundError:
            raise ImageError(f"{image.path}: a Linux image needs its {OFFSETS_FILE} beside "
                             f"it (made by kernel_images/linux/Makefile)") from None
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ImageError(f"{path}: not a kpemu offsets file ({exc!r})") from None
        self.init_task = image.symbol_value("init_task")
        # Where `current` is (Machine.current_addr and kprobes' C trap path read it so):
        # a UP kernel's per-CPU variables are plain ones -- no segment, the offset is
        # current_task's own address.
        self.current_segment = None
        self.current_offset = image.symbol_value(current)
        # THREAD_INFO_IN_TASK: nothing at a stack's base names its task.
        self.ti_task = None
        # User processes in the lower half, with their own page tables.
        self.has_user_space = True
        # Like task_state_index(): the reported states are the bits below the last two
        # names ("P (parked)" is the last bit reported, "I (idle)" its own index).
        self.report_mask = (1 << (len(self.state_names) - 2)) - 1


def read_task(mem, layout, addr):
    comm, pid = read_comm_pid(mem, layout, addr)
    state = int.from_bytes(mem.read(addr + layout.state, 4), "little")
    exit_state = int.from_bytes(mem.read(addr + layout.exit_state, 4), "little")
    bits = (state | exit_state) & layout.report_mask
    return Task(addr=addr,
                pid=pid, comm=comm,
                state=layout.state_names[bits.bit_length()],
                state_value=state | exit_state,
                stack=mem.u64(addr + layout.stack),
                saved_sp=mem.u64(addr + layout.thread_rsp),
                exit_code=int.from_bytes(mem.read(addr + layout.exit_code, 4), "little",
                                         signed=True))


def walk_tasks(mem, layout, limit=4096):
    """init_task, then every task on its `tasks` list (thread-group leaders), in order."""
    out = [read_task(mem, layout, layout.init_task)]
    head = layout.init_task + layout.tasks
    node = mem.u64(head)
    while node != head and len(out) < limit:
        out.append(read_task(mem, layout, node - layout.tasks))
        node = mem.u64(node)
    return out


class KpemuArea:
    """kpemu's executable area on Linux (see KPEMU_AREA_VA): its first TRAMPOLINE_SIZE
    bytes are kpemu's kretprobe_trampoline, a one-byte nop (the toy kernel's
    kretprobe.S), the rest an allocator (`alloc`) for kprobes' instruction slots.  The
    trampoline is a symbol of its own ("kretprobe_trampoline [kpemu]") and counts as
    kernel text; the slots do not."""

    def __init__(self, machine):
        self.m = machine
        ram_size = machine.engine.ram_size
        self.pt_paddr = ram_size - BIOS_RESERVED_TOP
        self.paddr = self.pt_paddr + PAGE_SIZE
        self.start = KPEMU_AREA_VA
        self.end = KPEMU_AREA_VA + KPEMU_AREA_SIZE
        self.tramp_addr = self.start
        self.allocator = ModuleArea(self.start + PAGE_SIZE, self.end)
        machine.symbols.add_module("kpemu", [SimpleNamespace(
            name=TRAMPOLINE, value=self.tramp_addr, size=1, executable=True,
            bind="STB_GLOBAL")], [(self.tramp_addr, self.tramp_addr + TRAMPOLINE_SIZE)])

    def _pmd_entry(self):
        """Physical address of the PMD entry that maps the area, walked from init_top_pgt
        (the kernel's swapper_pg_dir) -- the tables Linux's every process shares."""
        m = self.m
        mem = m.mem
        table = m.image.symbol_value("init_top_pgt") - START_KERNEL_MAP
        va = self.start
        for shift, level in ((39, "PGD"), (30, "PUD")):
            entry = int.from_bytes(mem.read_phys(table + ((va >> shift) & 0x1FF) * 8, 8),
                                   "little")
            if not entry & PTE_PRESENT or entry & PTE_PSE:
                raise MachineError(f"kpemu area: Linux's {level} entry for {va:#x} is "
                                   f"{entry:#x}, not a page table")
            table = entry & PTE_ADDR
        return table + ((va >> 21) & 0x1FF) * 8

    def map(self):
        """Map the area into Linux's kernel page tables (idempotent; the page-table writes
        are the host's, no guest time): the PTE page in the area's first physical page,
        its entry in the hole's PMD slot, the trampoline's nop.  MachineError when Linux
        has put something there."""
        mem = self.m.mem
        pmd = self._pmd_entry()
        want = self.pt_paddr | KERNPG_TABLE
        entry = int.from_bytes(mem.read_phys(pmd, 8), "little")
        if entry == want:
            return self
        if entry:
            raise MachineError(f"kpemu area: Linux maps {self.start:#x} itself "
                               f"(PMD entry {entry:#x}); kprobes has nowhere for its slots")
        ptes = b"".join(((self.paddr + i * PAGE_SIZE) | PAGE_KERNEL_EXEC).to_bytes(8, "little")
                        for i in range(KPEMU_AREA_SIZE // PAGE_SIZE))
        mem.write_phys(self.pt_paddr, ptes.ljust(PAGE_SIZE, b"\0"))
        mem.write_phys(pmd, want.to_bytes(8, "little"))
        self.m.engine.flush_tlb()
        mem.text_poke(self.tramp_addr, bytes((NOP,)))
        return self

    def alloc(self, size, align=16, tag=None):
        return self.allocator.alloc(size, align, tag)

    def free(self, va):
        self.allocator.free(va)


class LinuxGuest:
    """Attached to a Machine built on a Linux image (see the module doc)."""

    kind = "linux"

    def __init__(self, machine, initrd=None):
        self.m = machine
        image = machine.image
        if image.pvh_entry is None:
            raise ImageError(f"{image.path}: a Linux image without a PVH entry note "
                             "(CONFIG_PVH): kpemu cannot start it")
        self.layout = LinuxLayout(image)
        if initrd is None:
            initrd = default_initrd(image)
        self.initrd_path = os.fspath(initrd) if initrd else None
        self.initrd = read_initrd(initrd) if initrd else None
        self.panic_oops = None         # the report made when panic() was entered
        self.area = KpemuArea(machine)
        eng = machine.engine
        sym = image.symbol_value
        flush = machine.symbols.get("rethook_flush_task") or \
            machine.symbols.get("kprobe_flush_task")
        if flush is not None:
            eng.add_entry_hook(flush.addr, self._flush_task)
        eng.add_entry_hook(sym("run_init_process"), self._run_init_process)
        eng.add_entry_hook(sym("free_initmem"), self._free_initmem)
        eng.add_entry_hook(sym("panic"), self._panic)
        eng.add_entry_hook(sym("emergency_restart"), self._emergency_restart)
        eng.add_entry_hook(sym("oops_end"), self._oops_end)
        eng.on_syscall = self._syscall
        self.kprobes = LinuxKprobes(machine, self.layout.kprobe)

    # -- power-on ---------------------------------------------------------------------

    def boot_info(self):
        """(paddr, bytes) pieces: initrd, module list, e820 map, hvm_start_info + cmdline."""
        m = self.m
        pieces = []
        memmap = e820_map(m.engine.ram_size)
        pieces.append((MEMMAP_PADDR, b"".join(struct.pack("<QQII", a, s, t, 0)
                                              for a, s, t in memmap)))
        modlist = 0
        if self.initrd:
            at = initrd_paddr(m.engine.ram_size, len(self.initrd))
            pieces.append((at, self.initrd))
            pieces.append((MODLIST_PADDR, struct.pack("<QQQQ", at, len(self.initrd), 0, 0)))
            modlist = MODLIST_PADDR
        pieces += build_boot_info(m.cmdline, memmap=(MEMMAP_PADDR, len(memmap)),
                                  modules=(modlist, 1 if modlist else 0))
        return pieces

    def load(self):
        """Power-on: the image, the boot information, and the CPU where pvh_start_xen's
        32-bit half would leave it (module doc)."""
        m, eng, mem = self.m, self.m.engine, self.m.mem
        image = m.image
        for seg in image.segments:
            mem.write_phys(seg.paddr, seg.data)
            mem.write_phys(seg.paddr + len(seg.data), bytes(seg.memsz - len(seg.data)))
        pieces = self.boot_info()
        for paddr, blob in pieces:
            mem.write_phys(paddr, blob)
        start_info_pa = next(pa for pa, blob in pieces
                             if blob[:4] == struct.pack("<I", HVM_START_MAGIC))
        entry = self._decode_pvh_entry()
        pa = lambda name: image.symbol_value(name) - START_KERNEL_MAP    # noqa: E731
        # rep movsl of pvh_start_info_sz bytes from %ebx to pvh_start_info
        size = struct.unpack("<I", mem.read_phys(pa("pvh_start_info_sz"), 4))[0]
        mem.write_phys(pa("pvh_start_info"), mem.read_phys(start_info_pa, size & ~3))
        # lgdt (_pa(gdt)): a 16-bit limit and a 32-bit base
        limit, base = struct.unpack("<HI", mem.read_phys(entry["gdt"], 6))
        eng.set_table_reg("gdtr", base, limit)
        eng.set_reg("cr4", eng.reg("cr4") | 0x20)                 # PAE
        eng.set_msr(MSR_EFER, eng.msr(MSR_EFER) | 0x100)          # LME
        eng.set_reg("cr3", pa("init_top_pgt"))
        eng.set_reg("cr0", eng.reg("cr0") | 0x80000001)           # PG | PE
        eng.enter_ring0(entry["cs"], gdt_flags(eng, mem, entry["cs"]),
                        entry["ds"], gdt_flags(eng, mem, entry["ds"]))
        eng.set_regs(("sp", "bx", "si", "di", "cx", "ip"),
                     (pa("early_stack_end"), start_info_pa, start_info_pa + size,
                      pa("pvh_start_info") + size, 0, entry["ip"]))
        text = image.symbol_value("_text")
        if mem.walk(text) != text - START_KERNEL_MAP:
            raise ImageError(f"{image.path}: init_top_pgt does not map _text at {text:#x} "
                             f"to {text - START_KERNEL_MAP:#x}")
        mem.kernel_map_checked = True

    def _decode_pvh_entry(self):
        """pvh_start_xen's 32-bit half, decoded: the lgdt operand, the data selector it
        loads, and the far jump to its 64-bit label (selector and target)."""
        m = self.m
        entry = m.image.pvh_entry
        code = m.mem.read_phys(entry, 0x100)
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
        found = {}
        last_imm = None
        for insn in md.disasm(code, entry):
            if insn.mnemonic == "lgdt":
                found["gdt"] = int(insn.op_str.split("[", 1)[1].rstrip("]"), 16)
            elif insn.mnemonic == "mov" and insn.op_str.startswith("eax, 0x"):
                last_imm = int(insn.op_str.split(", ")[1], 16)
            elif insn.mnemonic == "mov" and insn.op_str == "ds, eax":
                found["ds"] = last_imm
            elif insn.mnemonic == "ljmp":
                sel, target = (int(x, 16) for x in insn.op_str.split(":"))
                found["cs"], found["ip"] = sel, target
                break
        if set(found) != {"gdt", "ds", "cs", "ip"}:
            raise ImageError(f"{m.image.path}: pvh_start_xen at {entry:#x} is not the "
                             f"32-bit entry kpemu knows (found {sorted(found)})")
        return found

    # -- hooks (run inside emu_start) -------------------------------------------------

    def _run_init_process(self):
        m = self.m
        if not m.booted:
            m.booted = True
            m._stop = "boot"
            m.engine.request_stop()

    def _panic(self):
        m = self.m
        if self.panic_oops is None and not m.call_depth:
            self.panic_oops = m.make_oops(None, "Kernel panic")

    def _emergency_restart(self):
        """panic() with panic=N (N != 0) ends here: stop with its report, the message
        being the kernel's own panic line.  A restart without a panic is a reboot."""
        m = self.m
        oops = self.panic_oops
        if oops is None:
            oops = m.make_oops(None, "emergency restart (no panic)")
        else:
            marker = "Kernel panic - not syncing"
            lines = [ln for ln in m.console.splitlines() if marker in ln]
            if lines:                    # the kernel's line, without a printk timestamp
                oops.message = lines[-1][lines[-1].index(marker):].strip()
            oops.console_tail = "\n".join(m.console.splitlines()[-8:])
        m.oops = oops
        m._stop = "oops"
        m.engine.request_stop()

    # The first line of Linux's own report (__die() and the page-fault path print it).
    OOPS_FIRST = re.compile(r"(BUG: |kernel BUG at |general protection fault|Oops: |"
                            r"invalid opcode: |stack segment: )")

    def _oops_end(self):
        """oops_end(flags, regs, signr): Linux has printed its report of the fault whose
        registers `regs` (%rsi) holds; stop with kpemu's own report of that context."""
        m = self.m
        if m.call_depth:
            return
        regs_addr = m.engine.reg("si")
        regs = {n: m.mem.u64(regs_addr + off) for n, off in self.layout.pt_regs.items()}
        oops = m.make_oops(None, "kernel oops")
        oops.regs = {n: regs[n] for n in REG_ORDER}
        oops.extra["ip_sym"] = m.symbols.format(regs["ip"])
        try:
            oops.backtrace = m.format_trace(m.stack_trace(SimpleNamespace(**regs)))
        except MemoryFault:
            oops.backtrace = [oops.extra["ip_sym"]]
        lines = m.console.splitlines()
        last = max((i for i, ln in enumerate(lines) if "Oops: " in ln), default=None)
        if last is not None:
            start = next((i for i in range(max(0, last - 8), last + 1)
                          if self.OOPS_FIRST.search(lines[i])), last)
            line = lines[start]
            oops.message = line[self.OOPS_FIRST.search(line).start():].strip()
        m.oops = oops
        m._stop = "oops"
        m.engine.request_stop()

    def _free_initmem(self):
        """free_initmem() entered: the init text is about to be freed (kernel_init() has
        just called kprobe_free_init_mem(), which kills Linux's own kprobes there)."""
        start, end = self.init_text()
        for handler in self.m.text_freed_handlers:
            handler(start, end)

    def _flush_task(self):
        """rethook_flush_task(tsk) entered (from delayed_put_task_struct(), when a dead
        task is released): the task and the call site, to the flush handlers."""
        m = self.m
        handlers = m.hypercall_handlers["HC_KPROBE_FLUSH_TASK"]
        if handlers:
            eng = m.engine
            task, sp = eng.regs(("di", "sp"))
            call_site = m.mem.u64(sp)
            m.emit("hypercall", name="HC_KPROBE_FLUSH_TASK", args=(task, call_site))
            for handler in handlers:
                handler(task, call_site)

    def _syscall(self):
        """SYSCALL, as the CPU does it (SDM; QEMU's helper_syscall in long mode)."""
        eng = self.m.engine
        if not eng.msr(MSR_EFER) & EFER_SCE:
            raise MachineError("syscall with EFER.SCE clear (the CPU would raise #UD)")
        rip, rflags = eng.regs(("ip", "flags"))
        cs = (eng.msr(MSR_STAR) >> 32) & 0xFFFC
        eng.enter_ring0(cs, SYSCALL_CS_FLAGS, cs + 8, SYSCALL_SS_FLAGS)
        # Unicorn adds the instruction's 2 bytes to RIP after this hook (unicorn#1048).
        eng.set_regs(("cx", "r11", "flags", "ip"),
                     (rip + 2, rflags, rflags & ~eng.msr(MSR_SYSCALL_MASK) & ~X86_EFLAGS_RF,
                      eng.msr(MSR_LSTAR) - 2))

    # -- tasks ------------------------------------------------------------------------

    def kpemu_area(self):
        """The KpemuArea, mapped."""
        return self.area.map()

    def init_text(self):
        """(start, end) of the init sections, which free_initmem() frees before init runs
        (__init_begin .. __init_end: .init.text and the other executable init sections)."""
        sym = self.m.symbols.lookup_name
        return sym("__init_begin"), sym("__init_end")

    def patched_text(self):
        """(start, end, what) of every site Linux patches at run time (PATCHED_SITE_TABLES),
        read from the image's tables."""
        m = self.m
        out = []
        for start, stop, size, what in PATCHED_SITE_TABLES:
            lo, hi = m.symbols.lookup_name(start), m.symbols.lookup_name(stop)
            table = m.read_image(lo, hi - lo) if lo is not None and hi is not None else None
            for i in range(0, len(table or b"") - size + 1, size):
                site = (lo + i + struct.unpack_from("<i", table, i)[0]) & 0xFFFFFFFFFFFFFFFF
                out.append((site, site + PATCHED_SITE_SIZE, what))
        return out

    def read_task(self, addr):
        return read_task(self.m.mem, self.layout, addr)

    def tasks(self):
        return walk_tasks(self.m.mem, self.layout)
