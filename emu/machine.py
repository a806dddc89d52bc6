"""Machine: a PC that boots a real x86_64 kernel image in Unicorn -- the one public face of
the emu layer (ARCHITECTURE.md, "Public Python API").

It wires the engine (CPU + RAM + instruction-count clock), the devices (16550, 8259A pair,
8254, isa-debug-exit, the kpemu hypercall port), interrupt delivery through the guest IDT,
the trap-dispatch table the kprobes layer registers into, kallsyms, modules, tasks, oops
reports and frame-pointer stack traces.

The run loop, and why it is shaped so:
  * the guest runs in emu_start slices that end at the next PIT edge (the C counter stops
    the CPU before the instruction the edge precedes), at a run's instruction limit, at a
    `hlt`, or when a hook asks;
  * between slices the host raises due PIT edges on the PIC and, when IF=1, delivers the
    PIC's vector through the guest IDT -- an interrupt is taken only at an instruction
    boundary where IF=1, one instruction late after `sti` (its interrupt shadow), as QEMU
    does;
  * while a request is pending and IF=0 the guest is stepped one instruction per slice, so
    the interrupt comes at the first boundary where it may;
  * `hlt` with IF=1 and nothing pending warps the clock to the next PIT edge (QEMU
    `-icount sleep=off`).
Nothing runs per instruction in Python: unprobed code only pays the C counter.

Must not import: kprobes (a test enforces it), unicorn (only emu.engine does).
"""

import gc
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from emu import interrupts, linux, snapshot
from emu.clock import Clock
from emu.cpu import X86_EFLAGS_IF, X86_EFLAGS_TF
from emu.devices.debug_exit import DebugExit
from emu.devices.pic8259 import PicPair
from emu.devices.pit8254 import Pit8254
from emu.devices.rtc_mc146818 import Rtc
from emu.devices.uart16550 import Uart16550
from emu.engine import NEVER, Engine
from emu.errors import GuestFault, ImageError, MachineError, MemoryFault
from emu.image import build_boot_info, load_image
from emu.memory import START_KERNEL_MAP, Memory
from emu.module_area import ModuleArea
from emu.oops import REG_ORDER, Oops, unwind
from emu.symbols import Symbols
from emu.tasks import TaskLayout, read_task, walk_tasks

RAM_SIZE = 128 << 20
DEFAULT_IMAGE = Path(__file__).resolve().parent.parent / "kernel_images" / "toykernel" / "vmlinux"

X86_CR0_PG = 0x80000000
X86_CR4_PAE = 0x20

# Vectors whose arrival is a guest fault: the host reports it (Oops) instead of entering
# the guest's die().  Everything else (int3, debug, int $0x80, IRQs) goes to the guest IDT.
FAULT_VECTORS = frozenset((0, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19))

# Hypercall numbers are the image's (HC_* asm-offsets exports); these are their names.
HYPERCALLS = ("HC_KPROBE_FLUSH_TASK", "HC_BOOT_DONE")

CALL_DEFAULT_LIMIT = 50_000_000
# The longest one emu_start of m.run() may be: Ctrl-C is noticed within a slice even when
# the guest spins with interrupts off (no PIT edge ends its slice then).
RUN_SLICE = 2_000_000
CALL_DATA_LIMIT = 1 << 20      # bytes and str arguments of one m.call, together


def _call_blobs(args):
    """What each m.call argument puts in guest memory: the bytes of a bytes or str
    argument (str NUL-terminated), None for an integer.  MachineError for anything else,
    or for more than CALL_DATA_LIMIT bytes in all."""
    blobs = []
    for i, arg in enumerate(args):
        if isinstance(arg, str):
            blobs.append(arg.encode() + b"\0")
        elif isinstance(arg, (bytes, bytearray, memoryview)):
            blobs.append(bytes(arg))
        elif isinstance(arg, int) and not isinstance(arg, bool):
            blobs.append(None)
        else:
            raise MachineError(f"m.call: argument {i + 1} must be an int, bytes or str, "
                               f"not {type(arg).__name__}")
    total = sum(len(b) for b in blobs if b is not None)
    if total > CALL_DATA_LIMIT:
        raise MachineError(f"m.call: {total} bytes of bytes/str arguments is more than the "
                           f"{CALL_DATA_LIMIT} one call may copy into the guest")
    return blobs


@dataclass
class RunResult:
    reason: str            # "halt" (powered off), "limit", "oops", "boot", "stopped"
    insns: int             # guest instructions this run executed (idle time in hlt not counted)
    exit_code: int = None  # the value written to isa-debug-exit, when halted
    oops: Oops = None

    def __repr__(self):
        extra = f", exit_code={self.exit_code}" if self.exit_code is not None else ""
        return f"RunResult(reason={self.reason!r}, insns={self.insns}{extra})"


@dataclass
class Event:
    """A mechanism event for observers: kind plus fields (vector, ip, ...)."""
    kind: str
    clock: int
    data: dict

    def __getattr__(self, name):
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None


@contextmanager
def _collector_paused():
    """The cyclic garbage collector held off while an image's symbols are made: tens of
    thousands of long-lived objects with no cycle among them, which each collection the
    allocations trigger would trace again for nothing (a tenth of building a machine
    for Linux).  Left as it was: off stays off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Machine:
    """A PC with one x86_64 CPU, 128 MiB of RAM and the kernel `image` loaded.

    The image picks the guest profile: the toy kernel (kernel_images/toykernel, the
    default, with its guest/host contract: docs/guest-host-contract.md) or a real Linux
    (emu/linux.py; `initrd` is its initramfs, by default the one beside the image).
    `cmdline` None means the image's default (the toy kernel: empty; Linux: the `cmdline`
    file beside it).  `clock` is how the instruction clock is counted: "block" (the
    default: a translated block at a time, per instruction where it must be) or "insn"
    (every instruction by a code hook: the reference, slower; the same clock at every
    point the guest or a hook can see -- emu/_fastpath.c, part 1)."""

    def __init__(self, image=None, cmdline=None, echo=None, initrd=None, clock="block"):
        with _collector_paused():
            self.image = load_image(image if image is not None else DEFAULT_IMAGE,
                                    ram_size=RAM_SIZE)
        is_linux = linux.is_linux(self.image)
        if cmdline is None:
            cmdline = linux.default_cmdline(self.image) if is_linux else ""
        if initrd is not None and not is_linux:
            raise ImageError(f"{self.image.path}: the toy kernel takes no initrd")
        self.cmdline = cmdline
        self.engine = Engine(RAM_SIZE, clock=clock)
        self.mem = Memory(self.engine)
        self.clock = Clock(self.engine)
        self.symbols = Symbols()
        with _collector_paused():
            self.symbols.load_kernel(self.image)
        self._kernel_text = list(self.image.text_ranges)
        self._modules = None

        # Devices
        self.uart = Uart16550(sink=echo, irq=self._uart_irq)
        self.pic = PicPair()
        self.pit = Pit8254(lambda: self.engine.icount.executed, self._pit_edge)
        self.debug_exit = DebugExit(self._power_off)
        self.rtc = Rtc(lambda: self.engine.icount.executed)
        for dev in (self.uart, self.pic, self.pit, self.debug_exit, self.rtc):
            for port in dev.ports():
                self.engine.out_ports[port] = dev.write
                self.engine.in_ports[port] = dev.read
        for port in self.pit.ports():
            self.engine.out_ports[port] = self._pit_write
        if is_linux:
            # Nothing of the toy kernel's contract: no module area (so no m.call or
            # modules yet), no hypercall port -- the one notification kprobes needs,
            # the task flush, comes from a host hook (emu/linux.py); kpemu's own area
            # for kprobes; offsets from the build's DWARF.
            self.guest = linux.LinuxGuest(self, initrd)
            self.layout = self.guest.layout
            self.module_area = None
            self.hc_port = None
            self.hypercall_numbers = {}
            self.hypercall_handlers = {"HC_KPROBE_FLUSH_TASK": []}
            area = self.guest.area
            self._kernel_text.append((area.tramp_addr, area.tramp_addr + linux.TRAMPOLINE_SIZE))
            self._init_text = self.guest.init_text()
        else:
            self.guest = None
            self._init_text = None     # the toy kernel frees no init text
            self.layout = TaskLayout(self.image)
            area_start = self.image.symbol_value("__module_area_start")
            area_end = self.image.symbol_value("__module_area_end")
            if not area_start < area_end:
                raise ImageError(f"{self.image.path}: empty module area "
                                 f"(__module_area_start {area_start:#x}, __module_area_end "
                                 f"{area_end:#x})")
            self.module_area = ModuleArea(area_start, area_end)
            self.hc_port = self.image.const("HC_PORT")
            self.hypercall_numbers = {self.image.const(n): n for n in HYPERCALLS}
            self.hypercall_handlers = {n: [] for n in HYPERCALLS}
            self.engine.out_ports[self.hc_port] = self._hypercall
        self.engine.on_invalid = self._invalid_opcode
        self.engine.on_mem_fault = self._mem_fault
        self.engine.on_interrupt = self._interrupt

        # What other layers plug in.
        # vector -> [fn(vector, ip, flags)] (register_trap_handler): the engine's own table,
        # which its C interrupt hook walks before calling _interrupt.
        self.trap_handlers = self.engine.trap_table
        self.unwind_resolvers = []     # fn(ret_addr, slot_addr) -> ret_addr
        self.text_originals = []       # fn(addr) -> the byte a breakpoint covers, or None
        self.text_freed_handlers = []  # fn(start, end): the kernel frees text (Linux's init)
        self.observers = []            # fn(Event)
        self.extensions = {}           # what a layer above installed, by name ("kprobes")
        self.call_depth = 0

        self.booted = False
        self.halted = False
        self.exit_code = None
        self.oops = None
        self.dead = None               # why the machine cannot go on (a stack overflow)
        self.irqs = 0
        self.cpu_halted = False        # in hlt, waiting for an interrupt
        self._stop = None              # why a hook stopped the guest: "halt"/"boot"/"oops"
        self._fault = None             # (access, addr, size) of the last memory fault
        self._interrupted = False      # Ctrl-C during a run
        self._call_ret = None
        if self.guest is not None:
            self.guest.load()
            return
        self._load()
        # m.call's return address: a landing pad of int3s in the module area.  emu_start's
        # `until` stops there before it executes, and no guest code is near it (Unicorn
        # re-translates the block holding until-1 at every return: notes, Q4).
        self._call_ret = self.module_area.alloc(64, 64, tag="m.call return")
        self.mem.write(self._call_ret, b"\xcc" * 64)

    @property
    def kind(self):
        """The guest profile: "toykernel" or "linux"."""
        return "toykernel" if self.guest is None else self.guest.kind

    # -- power-on ---------------------------------------------------------------------

    def _load(self):
        for seg in self.image.segments:     # load_image checked that each fits in RAM
            self.mem.write_phys(seg.paddr, seg.data)
            self.mem.write_phys(seg.paddr + len(seg.data), bytes(seg.memsz - len(seg.data)))
        for paddr, blob in build_boot_info(self.cmdline):
            self.mem.write_phys(paddr, blob)
        # Like a boot loader that entered long mode with the image's own page tables
        # (shared/reference/qemu-dual-boot-notes.md: with paging off Unicorn never fetches
        # from a kernel mapped at its virtual address).
        pgd = self.image.symbol_value("init_level4_pgt") - START_KERNEL_MAP
        eng = self.engine
        eng.set_reg("cr3", pgd)
        eng.set_reg("cr4", eng.reg("cr4") | X86_CR4_PAE)
        eng.set_reg("cr0", eng.reg("cr0") | X86_CR0_PG)
        start = self.image.symbol_value("_text")
        if self.mem.walk(start) != start - START_KERNEL_MAP:
            raise ImageError(f"{self.image.path}: its page tables do not map _text at "
                             f"{start:#x} to {start - START_KERNEL_MAP:#x}")
        self.mem.kernel_map_checked = True
        area = self.module_area
        if not (self.mem.mapped(area.start) and self.mem.mapped(area.end - 1)):
            raise ImageError(f"{self.image.path}: its page tables do not map the module area "
                             f"{area.start:#x}-{area.end:#x}")
        eng.set_reg("si", 0x7000)
        eng.set_reg("ip", self.image.entry)

    # -- hooks (run inside emu_start) -------------------------------------------------

    def _pit_edge(self):
        self.pic.set_irq(0, 1)
        self.pic.set_irq(0, 0)

    def _pit_write(self, port, size, value):
        """A PIT write, then the running slice cut short if the channel now has an
        edge before the slice would end: a kernel that reprograms the PIT and never
        halts (Linux) must get that tick when it is due, not when the slice runs out.
        Not inside m.call, where no interrupt is delivered until it returns."""
        self.pit.write(port, size, value)
        icount = self.engine.icount
        if not self.call_depth:
            due = self.pit.next_deadline()
            if due < icount.deadline:
                icount.deadline = max(due, icount.executed)

    def _uart_irq(self, level):
        """The 16550's interrupt line (IRQ4).  Rising inside a slice, it stops the
        guest before its next instruction so the run loop can deliver it there."""
        self.pic.set_irq(4, int(level))
        if level and not self.call_depth:
            self.engine.request_stop()

    def _power_off(self, value):
        self.halted = True
        self.exit_code = value
        self._stop = "halt"
        self.engine.request_stop()

    def _hypercall(self, port, size, value):
        name = self.hypercall_numbers.get(value)
        eng = self.engine
        if name == "HC_BOOT_DONE":
            if not self.booted:
                self.booted = True
                self._stop = "boot"
                eng.request_stop()
        elif name is not None:
            args = (eng.reg("di"), eng.reg("si"))
            self.emit("hypercall", name=name, args=args)
            for handler in self.hypercall_handlers[name]:
                handler(*args)

    def _interrupt(self, vector, ip, flags):
        """An interrupt no trap handler claimed (the engine's C hook tried the trap table
        first: kprobes takes 1 and 3 there): a fault becomes an oops, the rest enter the
        guest's IDT.  Reads the CPU, not ip/flags: a handler that declined may have
        written them (see register_trap_handler)."""
        if self.guest is not None:
            return self._deliver_exception(vector)
        if vector in FAULT_VECTORS:
            self.engine.icount.executed -= 1   # the faulting instruction did not complete
            self._raise_oops(vector, f"{interrupts.vector_name(vector)} at "
                             f"{self.symbols.format(self.engine.reg('ip'))}")
            return True
        self.emit("trap", vector=vector, ip=self.engine.reg("ip"))
        interrupts.deliver(self.engine, self.mem, vector)
        self._emit_delivered(vector)
        return True     # deliver wrote sp, flags and ip itself

    def _deliver_exception(self, vector):
        """Linux: every exception and software interrupt to the guest's own IDT, a
        CPU exception with the error code the CPU raised it with (CR2 is the CPU's)."""
        eng = self.engine
        error_code = None
        if vector < 32:
            code = eng.take_exception()
            if vector in interrupts.HAS_ERROR_CODE:
                error_code = code
            if vector in interrupts.FAULTS:
                eng.icount.executed -= 1   # the faulting instruction did not complete
        self.emit("trap", vector=vector, ip=eng.reg("ip"), error_code=error_code)
        interrupts.deliver(eng, self.mem, vector, error_code)
        return True

    def _invalid_opcode(self):
        if self.guest is not None:     # BUG() and WARN() are ud2: Linux's #UD handler
            return self._deliver_exception(6)
        self._raise_oops(6, f"invalid opcode at {self.symbols.format(self.engine.reg('ip'))}")
        return False

    def _mem_fault(self, access, addr, size):
        self._fault = (access, addr, size)

    def bug(self, message):
        """BUG(): stop the machine with an oops (from a hook: the guest stops before its
        next instruction; inside m.call: GuestFault).  For host layers that find the
        guest in a state they cannot continue from, e.g. a return through the kretprobe
        trampoline with no instance for the task."""
        self._raise_oops(None, f"kernel BUG: {message}")

    def _raise_oops(self, vector, message):
        if self._stop == "oops" and not self.call_depth:
            return                     # the first fault is the report; the CPU stops now
        oops = self.make_oops(vector, message)
        self.engine.stop_now()
        if self.call_depth:
            raise GuestFault(oops)     # m.call reports it; the machine goes on
        self._stop = "oops"
        self.oops = oops

    # -- observers ---------------------------------------------------------------------

    def emit(self, kind, **data):
        if self.observers:
            event = Event(kind, self.engine.icount.executed, data)
            for fn in self.observers:
                fn(event)

    def _emit_delivered(self, vector):
        """The guest's IDT gate was entered: the frame is pushed, ip is the handler's."""
        if self.observers:
            eng = self.engine
            self.emit("delivered", vector=vector, ip=eng.reg("ip"), sp=eng.reg("sp"),
                      flags=eng.reg("flags"))

    def register_trap_handler(self, vector, fn, first=False):
        """Let `fn(vector, ip, flags)` see interrupt `vector` before the machine does (the
        kprobes layer takes int3 and #DB this way).  Runs inside a Unicorn hook with ip and
        flags as trapped, and returns:
          * False (or None): not handled -- the next handler, then the machine (an oops
            for a fault, else delivery through the guest IDT), sees the trap.  One that
            declines but moved ip or flags (kprobes turning a fault in its slot back into
            a fault of the original instruction) writes them itself: later handlers get
            the values as trapped, the machine reads the CPU;
          * (ip, flags): handled, resume with these (written natively, no ctypes);
          * True: handled, nothing to write (no change, or it wrote registers itself).
        Other registers are read and written through m.engine as usual.  The engine's C
        interrupt hook calls the handlers itself (no Python frame in between), and keeps
        an exception one raises for m.run()/m.call() to re-raise.  `fn` may also be an
        emu.interrupts.CTrapHandler: a handler written in C (emu/kpemu.h), called with
        ip and flags as C integers."""
        handlers = self.trap_handlers.setdefault(vector, [])
        handlers.insert(0, fn) if first else handlers.append(fn)

    def unregister_trap_handler(self, vector, fn):
        self.trap_handlers.get(vector, []).remove(fn)

    # -- running ----------------------------------------------------------------------

    def boot(self, max_insns=None):
        """Run from power-on until init is about to start the workload (interrupts on,
        tasks created), so probes can be attached first."""
        if self.booted:
            raise MachineError("the machine has already booted")
        result = self._run(max_insns, until_boot=True)
        if result.reason == "halt" and not self.booted:
            raise MachineError("the kernel powered off before finishing boot "
                               f"(exit code {self.exit_code})")
        if self.booted and self._modules is not None:
            # Modules loaded before boot are initialised now, as the initcalls of built-in
            # code run before init starts the workload (a failed init raises here).
            self._modules.start(self.call)
        return result

    def run(self, max_insns=None):
        """Run the workload on: to power-off ("halt"), `max_insns` more instructions
        ("limit"; call again to continue) or a guest fault ("oops")."""
        if not self.booted:
            self.boot()
        return self._run(max_insns)

    def stop(self):
        """Stop m.run() before the guest's next instruction (from a handler or an observer,
        e.g. a lesson that has seen what it wanted): run() returns reason "stopped", and
        the next run() goes on from there."""
        if self.call_depth:
            raise MachineError("m.stop() stops m.run(), not a guest function m.call() runs")
        self._stop = "stopped"
        self.engine.request_stop()

    def snapshot(self):
        """The whole machine now, for restore(): RAM (copy-on-write), CPU, clock, devices,
        modules and symbols, run state, what other layers plugged in (emu/snapshot.py says
        exactly what, and when it is refused)."""
        return snapshot.take(self)

    def restore(self, snap):
        """Put the machine back as it was at `snap` (taken of this machine): it then runs
        byte-identically to the machine the snapshot was taken of.  A layer installed
        since (kprobes) is gone with everything it wrote into the guest."""
        snapshot.restore(self, snap)

    @contextmanager
    def _sigint_stops_the_guest(self):
        """While a run goes on, Ctrl-C (SIGINT) stops the guest before its next
        instruction and m.run() raises KeyboardInterrupt there, with the machine
        consistent and able to go on.  Only in the main thread, and only in place of
        Python's own handler (a program's own SIGINT handler is left alone)."""
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return

        def stop(_signum, _frame):
            self._interrupted = True
            self.engine.request_stop()

        previous = signal.signal(signal.SIGINT, stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _run(self, max_insns, until_boot=False):
        if max_insns is not None and (not isinstance(max_insns, int) or
                                      isinstance(max_insns, bool) or max_insns < 0):
            raise MachineError(f"max_insns must be a whole number of instructions, not "
                               f"{max_insns!r}")
        with self._sigint_stops_the_guest():
            return self._run_loop(max_insns, until_boot)

    def _run_loop(self, max_insns, until_boot):
        if self.halted:
            raise MachineError("the machine is powered off")
        if self.dead is not None:
            raise MachineError(f"the machine cannot go on: {self.dead}")
        if self.oops is not None:
            raise MachineError(f"the machine oopsed and cannot go on: {self.oops.message}")
        if self.engine.nested:
            raise MachineError("m.run() cannot be called from inside a handler; use m.call()")
        eng = self.engine
        icount = eng.icount
        clock = self.clock
        start = clock.executed       # max_insns counts instructions executed, not idle time
        self._stop = None
        self._interrupted = False
        while True:
            if self._interrupted:
                self._interrupted = False
                raise KeyboardInterrupt(f"kpemu: interrupted at "
                                        f"{self.symbols.format(eng.reg('ip'))} after "
                                        f"{clock.executed - start} instructions")
            now = icount.executed
            self.pit.fire_due(now)
            flags = eng.reg("flags")
            if self.pic.pending() and flags & X86_EFLAGS_IF:
                self._deliver_irq()
                continue
            if self.cpu_halted:
                # Only an interrupt wakes a halted CPU: jump the clock to the next PIT
                # edge, like QEMU with -icount sleep=off.
                clock.advance_idle(self.pit.next_deadline())
                continue
            if max_insns is None:
                limit = NEVER
            else:
                left = max_insns - (clock.executed - start)
                if left <= 0:
                    return self._result("limit", start)
                limit = now + left
            # Pending with IF=0: on until IF may have changed -- one instruction (the
            # reference clock), or one block (nothing but a block's last instruction
            # sets IF: engine.start(boundary=True)).
            step = self.pic.pending()
            by_block = step and eng.clock_kind == "block"
            deadline = now + 1 if step and not by_block else \
                min(self.pit.next_deadline(), limit, now + RUN_SLICE)
            rip = eng.reg("ip")
            self._fault = None
            status = eng.start(rip, 0, deadline, boundary=by_block)
            if status and self._stop is None:
                self._engine_error(status)
                return self._result("oops", start)
            if self._stop is None:
                if icount.executed < icount.deadline and not (by_block and eng.at_boundary):
                    self._halted_cpu()
                elif step and eng.reg("flags") & X86_EFLAGS_IF:
                    last = eng.last_insn if by_block else rip
                    if last is not None and self.text_byte(last) == 0xFB:
                        # sti: interrupts stay blocked for one more instruction (its
                        # shadow).
                        eng.start(eng.reg("ip"), 0, icount.executed + 1)
            if self._stop is not None:     # a hook powered off, finished boot or oopsed
                reason, self._stop = self._stop, None
                return self._result(reason, start)
            if until_boot and self.booted:
                return self._result("boot", start)

    def _halted_cpu(self):
        """emu_start returned early: the guest executed hlt (Unicorn just returns)."""
        eng = self.engine
        ip = eng.reg("ip")
        if self.mem.read(ip - 1, 1) != b"\xf4":
            raise MachineError(f"emulation stopped for no known reason at "
                               f"{self.symbols.format(ip)}")
        if not eng.reg("flags") & X86_EFLAGS_IF:
            self._raise_oops(None, f"hlt with interrupts disabled at "
                             f"{self.symbols.format(ip - 1)}: the CPU would never wake")
        elif self.pit.next_deadline() == NEVER and not self.pic.pending():
            self._raise_oops(None, f"hlt at {self.symbols.format(ip - 1)} with no timer "
                             "interrupt ever coming (PIT not programmed, or its output "
                             "stuck): the CPU would never wake")
        else:
            self.cpu_halted = True

    def _deliver_irq(self):
        self.cpu_halted = False
        vector = self.pic.acknowledge()
        self.irqs += 1
        self.emit("irq", vector=vector, ip=self.engine.reg("ip"))
        interrupts.deliver(self.engine, self.mem, vector)
        self._emit_delivered(vector)

    def _engine_error(self, status):
        ip = self.engine.reg("ip")
        if self._fault is not None:
            msg = self._no_ram_message(ip)
            vector = 14
        else:
            msg = f"engine error {status} at {self.symbols.format(ip)}"
            vector = None
        self.oops = self.make_oops(vector, msg)

    def _no_ram_message(self, ip):
        access, addr, _size = self._fault
        return (f"{access} of physical address {addr:#x}, which has no RAM behind it, "
                f"at {self.symbols.format(ip)}")

    def _result(self, reason, start):
        return RunResult(reason, self.clock.executed - start,
                         self.exit_code if reason == "halt" else None,
                         self.oops if reason == "oops" else None)

    # -- calling guest functions ------------------------------------------------------

    def call(self, target, *args, max_insns=CALL_DEFAULT_LIMIT, stack_size=None):
        """Call a guest function with the SysV ABI on the current task's stack and return
        its rax.  bytes/str arguments are copied into guest memory (str NUL-terminated;
        a block of the module area, CALL_DATA_LIMIT bytes at most in all, freed when the
        call returns) and passed as pointers.  No interrupt is delivered until it returns and the guest
        clock does not move; callable from inside a hook (nested emulation).

        `stack_size`: run on a fresh stack of that many bytes from the module area
        instead (for recursion deeper than a task's THREAD_SIZE stack); `current` stays
        the current task."""
        if self.module_area is None:
            raise MachineError(f"m.call needs the toy kernel's module area; the {self.kind} "
                               "guest has none yet")
        if not self.booted:
            raise MachineError("boot the machine (m.boot()) before m.call()")
        if self.dead is not None:
            raise MachineError(f"the machine cannot go on: {self.dead}")
        if self.halted:
            raise MachineError("the machine is powered off: m.call() has no guest to run")
        if len(args) > 6:
            raise MachineError("m.call passes at most 6 arguments (the SysV registers)")
        for what, value in (("max_insns", max_insns), ("stack_size", stack_size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value <= 0):
                raise MachineError(f"m.call: {what} must be a positive integer, not "
                                   f"{value!r}")
        addr = self._resolve(target)
        blobs = _call_blobs(args)
        eng = self.engine
        ctx = eng.context_save()
        stack = self.module_area.alloc(stack_size, 4096, tag="m.call stack") \
            if stack_size else None
        if stack:
            bounds = (stack, stack + stack_size)
        else:                          # the task's THREAD_SIZE stack, less its thread_info
            base = eng.reg("sp") & ~(self.layout.thread_size - 1)
            bounds = (base + self.layout.thread_info_end, base + self.layout.thread_size)
        # bytes and str arguments live in a block of their own, never on a stack
        data = self.module_area.alloc(sum(len(b) + 16 for b in blobs if b is not None),
                                      16, tag="m.call arguments") if any(
            b is not None for b in blobs) else None
        self.call_depth += 1
        try:
            with self.clock.frozen():
                sp = stack + stack_size if stack else eng.reg("sp") - 256
                values = []
                where = data
                for arg, blob in zip(args, blobs):
                    if blob is None:
                        values.append(arg & 0xFFFFFFFFFFFFFFFF)
                    else:
                        self.mem.write(where, blob)
                        values.append(where)
                        where += (len(blob) + 15) & ~15
                sp = (sp & ~0xF) - 8
                self.mem.set_u64(sp, self._call_ret)
                for reg, value in zip(("di", "si", "dx", "cx", "r8", "r9"), values):
                    eng.set_reg(reg, value)
                eng.set_reg("sp", sp)
                # No interrupts, and no single-step: a kprobe post_handler calls in
                # while the CPU still has TF set for the step it just took.
                eng.set_reg("flags", eng.reg("flags") & ~(X86_EFLAGS_IF | X86_EFLAGS_TF))
                self._fault = None
                status = eng.start(addr, self._call_ret, eng.icount.executed + max_insns)
                ip = eng.reg("ip")
                if ip != self._call_ret:
                    if status and self._fault:
                        msg = self._no_ram_message(ip)
                    elif self._stop == "halt":
                        msg = f"the guest powered off inside m.call({target!r})"
                    else:
                        msg = (f"m.call({target!r}) did not return within {max_insns} "
                               f"instructions; stopped at {self.symbols.format(ip)}")
                    self._stop = None
                    raise GuestFault(self.make_oops(None, msg))
                return eng.reg("ax")
        except GuestFault as exc:
            self._check_stack_overflow(exc, bounds)
            raise
        finally:
            self.call_depth -= 1
            eng.context_restore(ctx)
            if stack:
                self.module_area.free(stack)
            if data:
                self.module_area.free(data)

    def _check_stack_overflow(self, exc, bounds):
        """A fault with the stack pointer below the call's stack (or in the task's
        thread_info) is a kernel stack overflow: what lies below the stack was
        overwritten, so, as in Linux, the machine cannot go on -- say so in the report,
        and refuse to run or call from now on.  A stack pointer above it is code that
        switched to a stack of its own (an interrupt stack), not an overflow."""
        oops = exc.oops
        sp = oops.regs.get("sp")
        low, high = bounds
        if sp is None or sp >= low:
            return
        oops.message = (f"kernel stack overflow: sp {sp:#x} is outside the stack "
                        f"[{low:#x}, {high:#x}) ({oops.message}); the memory below the stack "
                        "was overwritten, so the machine cannot go on")
        exc.args = (oops.summary(),)
        self.dead = f"a kernel stack overflow in m.call (sp {sp:#x})"

    def _resolve(self, target):
        if isinstance(target, bool) or not isinstance(target, (int, str)):
            raise MachineError(f"m.call: the target must be a symbol name or an address, "
                               f"not {type(target).__name__}")
        if isinstance(target, int):
            return target
        addr = self.symbols.lookup_name(target)
        if addr is None:
            raise MachineError(f"no symbol {target!r} in the kernel or its modules")
        return addr

    # -- memory, symbols, tasks -------------------------------------------------------

    def read(self, addr, size):
        return self.mem.read(self._resolve(addr), size)

    def write(self, addr, data):
        self.mem.write(self._resolve(addr), data)

    def read_u64(self, addr):
        return self.mem.u64(self._resolve(addr))

    def read_image(self, addr, size):
        """`size` bytes at kernel address `addr` as the image file holds them, whatever
        the guest has done to that memory since (Linux frees and poisons its init data
        after boot), or None where the image has nothing."""
        return self.image.read(addr, size)

    def text_poke(self, addr, data):
        self.mem.text_poke(addr, data)

    def text_byte(self, addr):
        """The instruction byte at `addr` as the program has it: under a breakpoint some
        layer armed, the byte it covers (like Linux's recover_probed_instruction)."""
        for original in self.text_originals:
            byte = original(addr)
            if byte is not None:
                return byte
        return self.mem.read(addr, 1)[0]

    @property
    def console(self):
        return self.uart.output.decode("latin-1")

    @property
    def current(self):
        """The guest's `current` task (current_addr), read through the profile's layout."""
        addr = self.current_addr
        if not addr:
            return None
        if self.guest is not None:
            return self.guest.read_task(addr)
        return read_task(self.mem, self.layout, addr)

    @property
    def current_addr(self):
        """Address of the current task_struct (0 before the per-CPU area is set up):
        the word at the layout's current_offset, from the base of its current_segment
        (the toy kernel's %gs) or, with none (a UP Linux), at that address itself."""
        layout = self.layout
        if layout.current_segment is None:
            return self.mem.u64(layout.current_offset)
        base = self.engine.reg(layout.current_segment)
        return self.mem.u64(base + layout.current_offset) if base else 0

    def tasks(self):
        if self.guest is not None:
            return self.guest.tasks()
        return walk_tasks(self.mem, self.layout)

    def is_kernel_text(self, addr):
        """Whether `addr` is in the kernel's or a module's text now (Linux's
        core_kernel_text(): its init text is no text once the machine has booted, when
        free_initmem() has freed it)."""
        for a, b in self._kernel_text:     # a loop, not any(): registration asks per probe
            if a <= addr < b:
                init = self._init_text
                return not (init and self.booted and init[0] <= addr < init[1])
        return self._in_module_text(addr)

    def guest_kprobes(self):
        """The guest kernel's own kprobes as the host sees them (emu/linux_kprobes.py
        LinuxKprobes: its table, and hooks where it reads and writes text for them), or
        None for a kernel without kprobes of its own (the toy kernel)."""
        return getattr(self.guest, "kprobes", None) if self.guest is not None else None

    def guest_patched_text(self):
        """(start, end, what) of the text the guest kernel itself patches at run time
        (Linux: its jump labels and static call sites); none for the toy kernel."""
        return self.guest.patched_text() if self.guest is not None else []

    def _in_module_text(self, addr):
        if self._modules is None:
            return False
        for mod in self._modules.modules.values():      # loops, as is_kernel_text's
            for a, b in mod.text_ranges:
                if a <= addr < b:
                    return True
        return False

    def insn_area(self):
        """Where kprobes takes its instruction slots: executable kernel memory within
        2 GiB of the kernel's text, which the guest itself never uses -- the toy kernel's
        module area, or on Linux kpemu's own area (emu/linux.py KpemuArea, which also
        holds kpemu's kretprobe_trampoline), mapped into the kernel's page tables by this
        first call.  Either has alloc(size, align, tag) and free(addr)."""
        if self.guest is not None:
            return self.guest.kpemu_area()
        return self.module_area

    # -- modules ----------------------------------------------------------------------

    @property
    def modules(self):
        """The ModuleLoader (insmod/rmmod; its `notifiers` hear modules come and go),
        created at first use; it runs modules' init and cleanup through m.call once the
        machine has booted."""
        if self.module_area is None:
            raise MachineError(f"modules need the toy kernel's module area; the {self.kind} "
                               "guest has none yet")
        if self._modules is None:
            from emu.modules import ModuleLoader
            self._modules = ModuleLoader(self.mem, self.symbols, self.module_area)
            if self.booted:
                self._modules.start(self.call)
        return self._modules

    def add_module_notifier(self, fn):
        """Let fn(state, mod) hear modules come and go (register_module_notifier()).  A
        guest without kpemu's module loader (Linux) has no module that could come or go:
        nothing is registered."""
        if self.module_area is not None:
            self.modules.notifiers.append(fn)

    @property
    def call_return_address(self):
        """Where m.call's function returns to: a pad of int3s in the module area, the
        return address the outermost frame of a call sees."""
        return self._call_ret

    def loaded_modules(self):
        """The modules loaded now, in load order (an empty list before the first load;
        unlike `modules`, asking never creates the loader)."""
        return [] if self._modules is None else list(self._modules.modules.values())

    def load_module(self, path, name=None):
        """Load a relocatable ELF .o like insmod; its symbols join kallsyms, its
        `.init_array` constructors and init_module() run (before boot: when the machine
        has booted), and a failed init fails the load (ModuleLoadError, errno as insmod)."""
        return self.modules.load(os.fspath(path), name)

    def unload_module(self, mod):
        """Unload a module (a Module or its name) like rmmod: its cleanup_module() runs,
        the module notifiers hear it go (kprobes on its text go [GONE]) and its memory is
        poisoned and freed."""
        self.modules.unload(mod)

    # -- registers, traces, oopses ----------------------------------------------------

    def regs_dict(self):
        return {name: self.engine.reg(name) for name in REG_ORDER}

    def _first_bytes(self, ip):
        sym = self.symbols.symbol_at(ip)
        if sym is None:
            return None
        try:
            return ip - sym.addr, self.mem.read(ip, 1)[0], self.mem.read(sym.addr, 1) == b"\x55"
        except MemoryFault:
            return None

    def stack_trace(self, regs=None, resolve=True):
        """Return addresses, innermost first, by frame pointers; the first entry is the
        current ip (or regs.ip).  Resolvers registered by other layers (the kretprobe
        trampoline) map return addresses to the real callers; resolve=False gives the raw
        frame chain instead, what an unwinder without them (Linux before 5.15) saw."""
        if regs is None:
            ip, sp, bp = (self.engine.reg(n) for n in ("ip", "sp", "bp"))
        else:
            ip, sp, bp = regs.ip, regs.sp, regs.bp
        size = self.layout.thread_size
        low = sp & ~(size - 1)
        return unwind(self.mem.u64, self.is_kernel_text, ip, sp, bp, (low, low + size),
                      first_bytes=self._first_bytes,
                      resolvers=self.unwind_resolvers if resolve else (),
                      stop_at={self._call_ret})

    def format_trace(self, trace):
        return [self.symbols.format(a) for a in trace]

    def make_oops(self, vector, message):
        regs = self.regs_dict()
        try:
            trace = self.format_trace(self.stack_trace())
        except MemoryFault:
            trace = [self.symbols.format(regs["ip"])]
        try:
            task = str(self.current) if self.current else "?"
        except MemoryFault:
            task = "?"
        tail = "\n".join(self.console.splitlines()[-8:])
        return Oops(vector, message, regs, trace, task, tail, self.engine.icount.executed,
                    {"ip_sym": self.symbols.format(regs["ip"])})
