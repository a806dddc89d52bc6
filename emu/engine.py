"""The Unicorn engine, and the only module in kpemu that imports unicorn.

Owns the Uc object, guest RAM (one host mmap mapped with mem_map_ptr), the C callbacks
(emu/_fastpath.c: the block and instruction counters that are the guest clock, the
interrupt hook that reads and writes ip and flags natively), one Unicorn hook per event kind with a
Python list (or port table) behind it, the capture of exceptions raised inside hooks and
their re-raise from start(), the register fast path (direct ctypes calls), virtual-memory
access through uc_vmem_* (which the 2.1.4 binding does not wrap), and the translation-cache
flush that must follow every write to code (Unicorn's mem_write never invalidates translated
blocks: shared/reference/unicorn-2.1.4-notes.md, Q3).

Must not import: anything of kpemu's (it is the bottom layer).
"""

import ctypes
import functools
import mmap

import capstone
from capstone import x86_const as cs_x86
from unicorn import Uc, UcError
from unicorn import unicorn_const as uc_const
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

from emu import _fastpath, _tsc
from emu.errors import MachineError

NEVER = (1 << 64) - 1

# Register ids, by pt_regs name.  The rest of emu speaks these names, never UC_X86_REG_*.
REG_IDS = {
    "ax": x86.UC_X86_REG_RAX, "bx": x86.UC_X86_REG_RBX, "cx": x86.UC_X86_REG_RCX,
    "dx": x86.UC_X86_REG_RDX, "si": x86.UC_X86_REG_RSI, "di": x86.UC_X86_REG_RDI,
    "bp": x86.UC_X86_REG_RBP, "sp": x86.UC_X86_REG_RSP, "r8": x86.UC_X86_REG_R8,
    "r9": x86.UC_X86_REG_R9, "r10": x86.UC_X86_REG_R10, "r11": x86.UC_X86_REG_R11,
    "r12": x86.UC_X86_REG_R12, "r13": x86.UC_X86_REG_R13, "r14": x86.UC_X86_REG_R14,
    "r15": x86.UC_X86_REG_R15, "ip": x86.UC_X86_REG_RIP, "flags": x86.UC_X86_REG_EFLAGS,
    "cs": x86.UC_X86_REG_CS, "ss": x86.UC_X86_REG_SS, "ds": x86.UC_X86_REG_DS,
    "es": x86.UC_X86_REG_ES, "fs": x86.UC_X86_REG_FS, "gs": x86.UC_X86_REG_GS,
    "cr0": x86.UC_X86_REG_CR0, "cr3": x86.UC_X86_REG_CR3, "cr4": x86.UC_X86_REG_CR4,
    "fs_base": x86.UC_X86_REG_FS_BASE, "gs_base": x86.UC_X86_REG_GS_BASE,
    "dr6": x86.UC_X86_REG_DR6, "dr7": x86.UC_X86_REG_DR7,
}

# Callback signatures (the binding's, declared here so kpemu registers its own callbacks
# without the binding's per-call wrapper).  UC_HOOK_INTR is the C one in _fastpath.c.
_HOOK_OUT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                             ctypes.c_uint32, ctypes.c_void_p)
_HOOK_IN = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                            ctypes.c_void_p)
_HOOK_INSN0 = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p)
_HOOK_INVALID = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)
_HOOK_MEM_INVALID = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_int,
                                     ctypes.c_uint64, ctypes.c_int, ctypes.c_int64,
                                     ctypes.c_void_p)

_u64 = ctypes.c_uint64
uclib.uc_vmem_read.argtypes = [ctypes.c_void_p, _u64, ctypes.c_int, ctypes.c_void_p,
                               ctypes.c_size_t]
uclib.uc_vmem_write.argtypes = uclib.uc_vmem_read.argtypes
for _f in (uclib.uc_vmem_read, uclib.uc_vmem_write):
    _f.restype = ctypes.c_int


class _ICount(ctypes.Structure):
    """ctypes mirror of struct kpemu_icount (emu/kpemu.h)."""
    _fields_ = [("executed", _u64), ("deadline", _u64), ("emu_stop", ctypes.c_void_p),
                ("stops", _u64), ("hidden", _u64), ("pending", _u64),
                ("block", ctypes.c_void_p), ("precise", _u64), ("clock", ctypes.c_void_p),
                ("sync", ctypes.c_void_p)]


assert ctypes.sizeof(_ICount) == _fastpath.icount_struct_size()
_ICOUNT_HOOK = _fastpath.icount_hook_address()


# uc_ctl's control word (UC_CTL() of unicorn.h): the control, its argument count, the
# direction.
_CTL_REMOVE_CACHE = ctypes.c_int((uc_const.UC_CTL_IO_WRITE << 30) | (2 << 26) |
                                 uc_const.UC_CTL_TB_REMOVE_CACHE)


class _Tsc(ctypes.Structure):
    """ctypes mirror of struct kpemu_tsc (emu/_tsc.c): what the rdtsc/rdtscp callbacks read."""
    _fields_ = [("icount", ctypes.c_void_p), ("reg_read", ctypes.c_void_p),
                ("reg_write", ctypes.c_void_p), ("rax_id", ctypes.c_int),
                ("rdx_id", ctypes.c_int), ("rcx_id", ctypes.c_int), ("msr_id", ctypes.c_int)]


assert ctypes.sizeof(_Tsc) == _tsc.tsc_struct_size()

# The clock's two ways of counting (emu/_fastpath.c, part 1): "block", a translated block at
# a time, per instruction only where that is needed to stay exact -- the default; "insn",
# every instruction by a code hook -- the reference the block clock is tested against.
CLOCKS = ("block", "insn")
# What makes a block run per instruction for good: port I/O (its handler may stop the guest
# right after it, and nothing sets RIP at it) and cpuid (a Python hook).
_PRECISE_INSNS = (cs_x86.X86_INS_IN, cs_x86.X86_INS_OUT, cs_x86.X86_INS_INSB,
                  cs_x86.X86_INS_INSW, cs_x86.X86_INS_INSD, cs_x86.X86_INS_OUTSB,
                  cs_x86.X86_INS_OUTSW, cs_x86.X86_INS_OUTSD, cs_x86.X86_INS_CPUID)
_HOOK_SYSCALL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
# Memory hooks whose ranges the block clock moves onto the code pages it sees (_fastpath.c
# part 1): Unicorn then keeps every store there on its slow path, which drops the code a
# store overwrites.
_CODE_GUARDS = 32

# CPU state the 2.1.4 API does not expose, reached through a saved context, whose data is a
# copy of QEMU's CPUX86State: offsets of the pinned wheel (pyproject.toml: unicorn==2.1.4),
# checked by check_private_layout() before any Engine runs (it refuses to run otherwise).
#   hflags        HF_CPL_MASK (bits 0-1) is the CPL; reg_write(CS/SS) never changes it;
#   segs[6]       the segment caches (selector, base, limit, flags), 24 bytes each;
#   error_code    the error code of the exception being raised (#PF, #GP, ...);
#   old_exception the exception "in progress": QEMU's do_interrupt() clears it when it
#                 delivers one, but Unicorn hands exceptions to the host instead and never
#                 runs it, so a second fault would be taken for a double fault.
_CTX_DATA = 40              # offsetof(struct uc_context, data)
_ENV_HFLAGS = 176
_ENV_SEGS = 184
_SEG_SIZE = 24
_ENV_ERROR_CODE = 5384
_ENV_OLD_EXCEPTION = 5496
_SEG_INDEX = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}
HF_CPL_MASK = 3
HF_LMA_MASK = 1 << 14
HF_CS64_MASK = 1 << 15
UNICORN_VERSION = (2, 1, 4)
CPUID_1_ECX_OSXSAVE = 1 << 27
CPUID_1_ECX_RDRAND = 1 << 30
X86_CR4_OSXSAVE = 1 << 18
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_MISC_ENABLE_DEFAULT = 1            # fast-string enable
_private_layout_checked = False


def _ctx_field(ctx, offset, ctype):
    """A ctypes view of the CPUX86State field at `offset` in saved context `ctx`."""
    base = ctypes.cast(ctx.context, ctypes.c_void_p).value + _CTX_DATA
    return ctype.from_address(base + offset)


_SCRATCH_CODE_BUFFER = 1 << 20     # Unicorn's smallest


def _scratch_uc():
    """A CPU for a few instructions of start-up checking, with the smallest code buffer:
    the default one (1 GiB) would stay mapped until the collector frees it, and the
    engine's own buffer would be mapped below it, too far from Unicorn's helpers
    (Engine.__init__ says why that costs)."""
    uc = Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
    uc.ctl_set_tcg_buffer_size(_SCRATCH_CODE_BUFFER)
    return uc


@functools.lru_cache(maxsize=1)
def _cpuid_leaf1():
    """(eax, ebx, ecx, edx) of CPUID leaf 1 on this libunicorn's CPU model: the static part
    of what the CPUID hook answers (OSXSAVE, which mirrors CR4, is put in per call).  The
    same for the whole process: asked once."""
    uc = _scratch_uc()
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, b"\x0f\xa2")                  # cpuid
    uc.reg_write(x86.UC_X86_REG_RAX, 1)
    uc.reg_write(x86.UC_X86_REG_RCX, 0)
    uc.emu_start(0x1000, 0x1002)
    return tuple(uc.reg_read(r) & 0xFFFFFFFF for r in (
        x86.UC_X86_REG_RAX, x86.UC_X86_REG_RBX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX))


def check_private_layout():
    """Check, on a scratch CPU, that the private offsets above are this libunicorn's: the
    version is the pinned one, hflags holds the CPL and long-mode bits, a segment selector
    written through the context reads back through the API, a #GP's error code and
    "exception in progress" are where they are expected, and clearing the latter makes a
    second fault a #GP again, not a double fault.  MachineError says what did not hold."""
    global _private_layout_checked
    if _private_layout_checked:
        return
    from unicorn import uc_version
    major, minor, patch = (uc_version()[2] >> s & 0xFF for s in (24, 16, 8))
    if (major, minor, patch) != UNICORN_VERSION:
        raise MachineError(f"libunicorn {major}.{minor}.{patch} is not the pinned "
                           f"{'.'.join(map(str, UNICORN_VERSION))}: kpemu reads CPU state "
                           "at offsets of that build and refuses to run on another")

    def fail(what):
        raise MachineError(f"libunicorn {major}.{minor}.{patch}: its CPU state layout is not "
                           f"the one kpemu was written for ({what}); refusing to run")

    uc = _scratch_uc()
    base = 0x1000
    # mov ax, 0x1234; mov ds, ax; mov ds, ax; mov rax, cr0; nop
    code = b"\x66\xb8\x34\x12\x8e\xd8\x8e\xd8\x0f\x20\xc0\x90"
    uc.mem_map(base, 0x1000)
    uc.mem_write(base, code)
    ctx = uc.context_save()
    hflags = _ctx_field(ctx, _ENV_HFLAGS, ctypes.c_uint32).value
    if hflags & (HF_LMA_MASK | HF_CS64_MASK) != HF_LMA_MASK | HF_CS64_MASK or hflags & 3:
        fail(f"hflags {hflags:#x} at +{_ENV_HFLAGS} is not a 64-bit CPL0 state")
    _ctx_field(ctx, _ENV_SEGS + _SEG_SIZE * _SEG_INDEX["ss"], ctypes.c_uint32).value = 0x2B
    uc.context_restore(ctx)
    if uc.reg_read(x86.UC_X86_REG_SS) != 0x2B:
        fail(f"segment caches not at +{_ENV_SEGS}")
    seen = []

    def intr(uc_, intno, _ud):
        uc.context_update(ctx)
        seen.append((intno, _ctx_field(ctx, _ENV_ERROR_CODE, ctypes.c_int32).value,
                     _ctx_field(ctx, _ENV_OLD_EXCEPTION, ctypes.c_int32).value))
        _ctx_field(ctx, _ENV_OLD_EXCEPTION, ctypes.c_int32).value = -1
        if len(seen) == 2:     # the next fault is taken at CPL3: mov from cr0 is privileged
            flags = _ctx_field(ctx, _ENV_HFLAGS, ctypes.c_uint32)
            flags.value |= 3
        uc.context_restore(ctx)
        uc.reg_write(x86.UC_X86_REG_RIP, uc.reg_read(x86.UC_X86_REG_RIP) +
                     (3 if len(seen) == 3 else 2))

    uc.hook_add(uc_const.UC_HOOK_INTR, intr)
    uc.emu_start(base, base + len(code) - 1)
    if seen != [(13, 0x1234, 13), (13, 0x1234, 13), (13, 0, 13)]:
        fail(f"faults seen {seen}, expected #GP(0x1234) twice and #GP(0) at CPL3 "
             f"(error code at +{_ENV_ERROR_CODE}, old_exception at +{_ENV_OLD_EXCEPTION})")
    _private_layout_checked = True


def _address(fn):
    """The address of a function of the loaded libunicorn (for the C hooks to call)."""
    return ctypes.cast(fn, ctypes.c_void_p).value


MEM_ACCESS = {
    uc_const.UC_MEM_READ_UNMAPPED: "read", uc_const.UC_MEM_WRITE_UNMAPPED: "write",
    uc_const.UC_MEM_FETCH_UNMAPPED: "fetch", uc_const.UC_MEM_READ_PROT: "read",
    uc_const.UC_MEM_WRITE_PROT: "write", uc_const.UC_MEM_FETCH_PROT: "fetch",
}


class Engine:
    """One x86_64 CPU and its RAM.

    Hooks: `on_interrupt` (below), `out_ports[port]` (fn(port, size, value)),
    `in_ports[port]` (fn(port, size) -> value), `on_syscall` (fn(); Unicorn adds the
    instruction's 2 bytes to RIP after it), `on_invalid` (fn() -> bool), `on_mem_fault`
    (fn(access, addr, size)), and `add_entry_hook(addr, fn)` for a function's entry.
    CPUID leaf 1 is answered without RDRAND (host randomness would make runs differ).  rdtsc and
    rdtscp read the instruction count (icount.executed) in C.  All of them run inside
    emu_start: an exception they raise stops the guest before its next instruction and is
    re-raised from start().

    Interrupts (every one Unicorn raises) go to the C hook in _fastpath.c, which reads RIP
    and EFLAGS natively and calls, with them, the handlers of `trap_table[vector]` (a list,
    tried in order) and then, if none claimed it, `on_interrupt`.  Each is
    fn(vector, ip, flags) and returns:
      * False or None: not claimed -- the next one is tried; on_interrupt returning it
        stops the run with MachineError("interrupt N not handled");
      * a tuple (ip, flags): handled, the CPU resumes with these (the C hook writes, natively,
        whichever of the two differs from the CPU's);
      * True (any other true value): handled, nothing for the hook to write.  A handler
        that wrote ip or flags itself (set_reg/set_regs: delivery through the guest IDT,
        a rare path) returns True, so the hook does not write over them.
    An exception they raise is kept by the C hook, which stops the guest the way
    request_stop() does; start() re-raises it.
    """

    def __init__(self, ram_size, clock="block"):
        if clock not in CLOCKS:
            raise MachineError(f"clock must be one of {', '.join(CLOCKS)}, not {clock!r}")
        check_private_layout()
        self.uc = Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
        self._uch = self.uc._uch
        # The translator's code buffer (1 GiB, mmapped when the engine initialises) before
        # guest RAM: mmap places each new mapping below the last, and translated code calls
        # Unicorn's helpers and our hooks with a rel32 only within 2 GiB of them; beyond
        # that every call goes through a constant pool that TCG keeps sorted by insertion
        # per block -- quadratic in the block's calls, which made translation 60% of a
        # Linux boot when RAM went first and pushed the buffer down.  Reading the buffer's
        # size is what initialises it (UC_INIT).
        self.uc.ctl_get_tcg_buffer_size()
        self.ram_size = ram_size
        self.ram = mmap.mmap(-1, ram_size)
        self._ram_obj = ctypes.c_char.from_buffer(self.ram)
        self.uc.mem_map_ptr(0, ram_size, uc_const.UC_PROT_ALL, ctypes.addressof(self._ram_obj))

        self._cbs = []  # keep the ctypes callbacks alive
        self.clock_kind = clock
        self.icount = _ICount(0, NEVER, _address(uclib.uc_emu_stop), 0, 0)
        self._clock = _fastpath.BlockClock(
            self.icount, ctypes.addressof(self.icount),
            ctypes.cast(self._uch, ctypes.c_void_p).value,
            _address(uclib.uc_reg_read), ctypes.addressof(self._ram_obj), ram_size,
            (x86.UC_X86_REG_RIP, x86.UC_X86_REG_CR0, x86.UC_X86_REG_CR3), clock == "insn",
            _address(capstone._cs.cs_open), _address(capstone._cs.cs_malloc),
            _address(capstone._cs.cs_disasm_iter), capstone.CS_ARCH_X86, capstone.CS_MODE_64,
            capstone._cs_insn.id.offset, _PRECISE_INSNS)
        # The only block hook (entry hooks are called from it): Unicorn then calls it from
        # the translated code itself, which is what names a translation (part 1).
        self._add_hook(uc_const.UC_HOOK_BLOCK, ctypes.c_void_p(_fastpath.block_hook_address()),
                       ctypes.c_void_p(self._clock.user_data))
        # The per-instruction counter: on all code for "insn"; for "block", on no code
        # until a block must be counted so, then on that block's range while it is
        # translated again (its struct hook's range moved in C, after a layout check).
        begin, end = (1, 0) if clock == "insn" else (NEVER, NEVER)
        code_hook = self._add_hook(uc_const.UC_HOOK_CODE, ctypes.c_void_p(_ICOUNT_HOOK),
                                   ctypes.c_void_p(self._clock.user_data), begin, end)
        if clock == "block":
            try:
                self._clock.set_hook(code_hook, begin, end)
            except RuntimeError as exc:
                raise MachineError(f"{exc}; refusing to run") from None

        self.trap_table = {}           # vector -> [fn(vector, ip, flags)], tried first
        self.on_interrupt = lambda vector, ip, flags: False
        self.out_ports = {}
        self.in_ports = {}
        self.on_unhandled_out = None
        self.on_syscall = None
        self.on_invalid = None
        self.on_mem_fault = None
        self._exc = None
        self._depth = 0
        self.at_boundary = False        # the last start(boundary=True) stopped there
        self._batches = {}
        self._install_hooks()
        self._private_ctx = self.uc.context_save()
        # IA32_MISC_ENABLE at reset as QEMU's CPU model has it (fast strings on); Unicorn
        # leaves it 0, and Linux then "disables fast string operations".
        self.uc.msr_write(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_DEFAULT)

    # -- hooks ------------------------------------------------------------------------

    def _add_hook(self, kind, fptr, user_data=None, begin=1, end=0, *extra):
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(self._uch, ctypes.byref(handle), kind, fptr,
                                   user_data, _u64(begin), _u64(end), *extra)
        if status != uc_const.UC_ERR_OK:
            raise MachineError(f"uc_hook_add({kind}) failed: {UcError(status)}")
        self._cbs.append(fptr)
        return handle.value

    def _guard(self, fn, failed=None):
        """Wrap a hook body: capture an exception and stop the guest before its next
        instruction, like the binding's uccallback but through the clock's deadline (so
        the stop never costs an instruction count)."""
        def wrapper(*args):
            try:
                return fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised from start()
                if self._exc is None:
                    self._exc = exc
                self.request_stop()
                return failed
        return wrapper

    def _interrupt(self, vector, ip, flags):
        """The C hook's fallback, when no trap_table handler claimed the interrupt (an
        exception raised here is kept by the hook, like a handler's)."""
        result = self.on_interrupt(vector, ip, flags)
        if not result:
            raise MachineError(f"interrupt {vector} not handled")
        return result

    def _install_hooks(self):
        def out(_uc, port, size, value, _ud):
            handler = self.out_ports.get(port)
            if handler is not None:
                handler(port, size, value)
            elif self.on_unhandled_out is not None:
                self.on_unhandled_out(port, size, value)

        def in_(_uc, port, size, _ud):
            handler = self.in_ports.get(port)
            if handler is None:
                return (1 << (8 * size)) - 1  # an empty ISA bus reads all ones
            return handler(port, size)

        def invalid(_uc, _ud):
            self._clock.sync(True)         # #UD: RIP is at it; the block's rest does not run
            return bool(self.on_invalid and self.on_invalid())

        def mem_fault(_uc, access, addr, size, _value, _ud):
            if self.on_mem_fault is not None:
                self.on_mem_fault(MEM_ACCESS.get(access, "access"), addr, size)
            return False

        # Interrupts: the C hook reads ip and flags, calls trap_table[vector] then
        # _interrupt, writes the (ip, flags) returned.
        self._intr_hook = _fastpath.InterruptHook(
            self.trap_table, self._interrupt, self.icount, ctypes.addressof(self.icount),
            _address(uclib.uc_reg_read), _address(uclib.uc_reg_write),
            x86.UC_X86_REG_RIP, x86.UC_X86_REG_EFLAGS)
        self._add_hook(uc_const.UC_HOOK_INTR, ctypes.c_void_p(_fastpath.intr_hook_address()),
                       ctypes.c_void_p(self._intr_hook.user_data))
        # What emu.cpu.PtRegs views read and write registers through, natively.
        self.regfile = _fastpath.RegFile(
            self.uc, ctypes.cast(self._uch, ctypes.c_void_p).value,
            _address(uclib.uc_reg_read), _address(uclib.uc_reg_write), REG_IDS,
            _address(uclib.uc_vmem_read), _address(uclib.uc_vmem_write))
        self._read_reg = self.regfile.read
        self._add_hook(uc_const.UC_HOOK_INSN, _HOOK_OUT(self._guard(out)), None, 1, 0,
                       ctypes.c_int(x86.UC_X86_INS_OUT))
        self._add_hook(uc_const.UC_HOOK_INSN, _HOOK_IN(self._guard(in_, 0)), None, 1, 0,
                       ctypes.c_int(x86.UC_X86_INS_IN))
        # rdtsc and rdtscp read the guest clock, in C (emu/_tsc.c).  The binding refuses
        # an RDTSC hook although the core supports it (notes, Q5): registered directly.
        self._tsc = _Tsc(ctypes.addressof(self.icount), _address(uclib.uc_reg_read),
                         _address(uclib.uc_reg_write), x86.UC_X86_REG_RAX, x86.UC_X86_REG_RDX,
                         x86.UC_X86_REG_RCX, x86.UC_X86_REG_MSR)
        for insn, fptr in ((x86.UC_X86_INS_RDTSC, _tsc.rdtsc_hook_address()),
                           (x86.UC_X86_INS_RDTSCP, _tsc.rdtscp_hook_address())):
            self._add_hook(uc_const.UC_HOOK_INSN, ctypes.c_void_p(fptr),
                           ctypes.byref(self._tsc), 1, 0, ctypes.c_int(insn))

        def syscall(_uc, _ud):
            self._clock.sync(False)        # RIP is at it (it ends its block)
            if self.on_syscall is not None:
                self.on_syscall()

        # CPUID leaf 1 without RDRAND: Unicorn's rdrand (like QEMU's TCG one) returns host
        # randomness, which a kernel mixes into its hashing and address-space layout, and
        # runs would differ.  Every other leaf is Unicorn's own.
        self._cpuid1 = _cpuid_leaf1()

        def cpuid(_uc, _ud):
            if self.reg("ax") & 0xFFFFFFFF != 1:
                return 0                                  # Unicorn answers
            eax, ebx, ecx, edx = self._cpuid1
            ecx &= ~(CPUID_1_ECX_RDRAND | CPUID_1_ECX_OSXSAVE)
            if self.reg("cr4") & X86_CR4_OSXSAVE:
                ecx |= CPUID_1_ECX_OSXSAVE
            self.set_regs(("ax", "bx", "cx", "dx"), (eax, ebx, ecx, edx))
            return 1

        self._add_hook(uc_const.UC_HOOK_INSN, _HOOK_INSN0(self._guard(cpuid, 1)), None, 1, 0,
                       ctypes.c_int(x86.UC_X86_INS_CPUID))

        # Without a hook Unicorn's syscall does nothing at all (notes, Q5).
        self._add_hook(uc_const.UC_HOOK_INSN, _HOOK_SYSCALL(self._guard(syscall)), None, 1, 0,
                       ctypes.c_int(x86.UC_X86_INS_SYSCALL))
        self._add_hook(uc_const.UC_HOOK_INSN_INVALID, _HOOK_INVALID(self._guard(invalid, False)))
        # Faults come only from beyond RAM (RAM is mapped whole, with every permission).
        # A hook whose range covers RAM keeps Unicorn's stores there off the fast path;
        # the block clock guards code pages instead (_fastpath.c part 1), so with it this
        # hook covers only what lies beyond.  The per-instruction clock keeps the
        # reference: every store the slow way.
        block = self.clock_kind == "block"
        self._add_hook(uc_const.UC_HOOK_MEM_UNMAPPED | uc_const.UC_HOOK_MEM_PROT,
                       _HOOK_MEM_INVALID(self._guard(mem_fault, False)), None,
                       *((self.ram_size, NEVER) if block else (1, 0)))
        if block:
            guards = [self._add_hook(uc_const.UC_HOOK_MEM_FETCH_UNMAPPED,
                                     ctypes.c_void_p(_fastpath.guard_hook_address()),
                                     ctypes.c_void_p(self._clock.user_data), NEVER, NEVER)
                      for _ in range(_CODE_GUARDS)]
            try:
                self._clock.set_guards(guards, _address(uclib.qemu_get_cpu_x86_64),
                                       _address(uclib.tlb_reset_dirty_x86_64))
            except (RuntimeError, AttributeError) as exc:
                raise MachineError(f"{exc}; refusing to run") from None

    def add_entry_hook(self, addr, fn):
        """Call fn() when a translated block starts at `addr` -- a function's entry, which
        a call or jump always starts a block at -- before its first instruction runs.  Called
        from the clock's block hook (which must stay the only one), for translations it
        marked when it first saw them: a table lookup when a block is first translated,
        nothing per block run elsewhere.  fn may request_stop(): the CPU then stops with
        the entry's instruction not run.  For a machine's fixed stop points, added while
        it is built (not from inside a hook)."""
        self._clock.add_entry(addr, self._guard(fn))

    # -- CPU state the API does not expose (offsets checked by check_private_layout) --

    def take_exception(self):
        """From the interrupt hook, for a CPU exception the host delivers itself: the
        error code the CPU raised it with, and its "exception in progress" state cleared
        as the CPU's own delivery would clear it (else the next fault is a #DF)."""
        ctx = self._private_ctx
        self.uc.context_update(ctx)
        error_code = _ctx_field(ctx, _ENV_ERROR_CODE, ctypes.c_int32).value
        _ctx_field(ctx, _ENV_OLD_EXCEPTION, ctypes.c_int32).value = -1
        self.uc.context_restore(ctx)
        return error_code & 0xFFFFFFFF

    @property
    def cpl(self):
        """The current privilege level (CS.RPL, which the CPU keeps equal to it)."""
        return self.reg("cs") & 3

    def enter_ring0(self, cs, cs_flags, ss, ss_flags):
        """Load CS and SS for ring 0 as a privilege change does (syscall, or an interrupt
        taken in ring 3): selectors, flat 64-bit caches with the descriptors' flags, and
        CPL 0.  Unicorn's reg_write(CS/SS) would change only the selectors."""
        ctx = self._private_ctx
        self.uc.context_update(ctx)
        hflags = _ctx_field(ctx, _ENV_HFLAGS, ctypes.c_uint32)
        hflags.value &= ~HF_CPL_MASK
        for name, sel, flags in (("cs", cs, cs_flags), ("ss", ss, ss_flags)):
            seg = _ENV_SEGS + _SEG_SIZE * _SEG_INDEX[name]
            _ctx_field(ctx, seg, ctypes.c_uint32).value = sel
            _ctx_field(ctx, seg + 8, _u64).value = 0
            _ctx_field(ctx, seg + 16, ctypes.c_uint32).value = 0xFFFFFFFF if sel & ~3 else 0
            _ctx_field(ctx, seg + 20, ctypes.c_uint32).value = flags if sel & ~3 else 0
        self.uc.context_restore(ctx)

    def msr(self, index):
        return self.uc.msr_read(index)

    def set_msr(self, index, value):
        self.uc.msr_write(index, value)

    def set_table_reg(self, name, base, limit):
        """Load GDTR or IDTR, as lgdt/lidt would."""
        rid = {"gdtr": x86.UC_X86_REG_GDTR, "idtr": x86.UC_X86_REG_IDTR}[name]
        self.uc.reg_write(rid, (0, base, limit, 0))

    def tr_base(self):
        """Base of the task state segment the guest loaded (ltr)."""
        _sel, base, _limit, _flags = self.uc.reg_read(x86.UC_X86_REG_TR)
        return base

    def cr2(self):
        return self.uc.reg_read(x86.UC_X86_REG_CR2)

    # -- running ----------------------------------------------------------------------

    @property
    def executed(self):
        return self.icount.executed

    def sync_clock(self):
        """Make icount.executed exact at the instruction at RIP, from a hook inside
        emu_start.  The clock counts a translated block whole at its start and is
        behind inside it; every hook the engine dispatches is called with it already
        exact (see emu/_fastpath.c, part 1): a new hook kind at an instruction that sets
        RIP (faults, int n, syscall, rdtsc, cpuid) calls this first -- C code calls
        icount->sync() when icount->block is set."""
        self._clock.sync(False)

    def request_stop(self):
        """Stop the guest before its next instruction (callable from any hook)."""
        self.icount.deadline = self.icount.executed

    def stop_now(self):
        """Stop the CPU loop itself, from an interrupt hook: for a fault whose
        instruction never completes, the instruction counter's stop would not come
        before the CPU faults on it again (and QEMU makes a second fault a double
        fault)."""
        self.request_stop()
        self.uc.emu_stop()

    def start(self, begin, until=0, deadline=NEVER, boundary=False):
        """Run from `begin` until `deadline` instructions have been executed in all, `until`
        is reached, the guest halts, or a hook stops it.  Re-raises what a hook raised.
        Nested calls (from inside a hook) are allowed; the caller restores the clock.

        The block clock may stop the CPU before a block to have it run per instruction
        (port I/O, or the deadline falls inside it): the block gets a code hook on its
        range, its translation is dropped, and the run goes on from there -- invisibly to
        the caller.  Blocks run so for a deadline stay so (a CPU stepped one instruction
        at a time, waiting for IF, goes through the same few blocks again and again).

        boundary=True (the block clock only): also stop at the first block boundary after
        one instruction -- a run of one block, counted whole.  Nothing can set IF but the
        last instruction of a block (sti, popf, iret and sysret end theirs), so a CPU
        waiting for IF runs so a block at a time (`last_insn` names what ran last;
        `at_boundary` says the run stopped there)."""
        if boundary and self.clock_kind != "block":
            raise MachineError("a run to the next block boundary needs the block clock")
        self.icount.deadline = deadline
        outer = None
        if self._depth:                 # inside a hook: the outer block is put back after
            outer = self._clock.save()
            self._clock.reset(self.clock_kind == "insn")
        outer_boundary = self._clock.boundary
        self._clock.set_boundary(boundary, self.icount.executed)
        self._depth += 1
        try:
            while True:
                status = uclib.uc_emu_start(self._uch, begin, until, 0, 0)
                want = self._clock.take_want()
                if want is None or status != uc_const.UC_ERR_OK or self._exc is not None:
                    break
                self._run_precise(*want)
                begin = want[0]
        finally:
            self._depth -= 1
            self._clock.sync(True)
            self.at_boundary = self._clock.boundary_hit
            self._clock.set_boundary(*outer_boundary)
            if outer is not None:
                self._clock.restore(outer)
        exc, self._exc = self._exc, None
        intr_exc = self._intr_hook.take_error()    # raised by an interrupt handler
        if exc is None:
            exc = intr_exc
        if exc is not None:
            raise exc
        return status

    @property
    def last_insn(self):
        """After a run stopped at a block boundary: the address of the last instruction
        that ran (None when unknown: the block was left by a fault or interrupt)."""
        return self._clock.prev_last

    def _run_precise(self, pc, size):
        """The block at `pc` (the CPU is stopped before it) is counted per instruction from
        now on: the code hook's range moved onto it and its translation dropped, so that
        the next one has a hook call before each instruction."""
        self._clock.add_precise(pc, size)
        self.flush_code(pc, size)

    @property
    def clock_stats(self):
        """The block clock's counts: translations decoded, blocks counted whole, table
        sizes (for benchmarks and tests)."""
        return self._clock.stats

    @property
    def clock_table_limit(self):
        """How many translations the block clock keeps what it decoded of before its
        table starts afresh (2^20; lower only to test that starting afresh is harmless)."""
        return self._clock.max_translations

    @clock_table_limit.setter
    def clock_table_limit(self, n):
        self._clock.max_translations = n

    @property
    def nested(self):
        return self._depth > 0

    @property
    def hook_count(self):
        """How many Unicorn hooks the engine has installed.  All are installed when it is
        built: nothing added later (a probe, a call) may add one."""
        return len(self._cbs)

    # -- registers --------------------------------------------------------------------

    def reg(self, name):
        """One register, read natively (the RegFile's C call: no ctypes marshalling; it
        clears the high half Unicorn leaves unwritten for EFLAGS and the selectors)."""
        return self._read_reg(REG_IDS[name])

    def set_reg(self, name, value):
        buf = _u64(value & 0xFFFFFFFFFFFFFFFF)
        uclib.uc_reg_write(self._uch, REG_IDS[name], ctypes.byref(buf))

    def regs(self, names):
        """Several registers in one crossing (uc_reg_read_batch): a list of values."""
        batch = self._batch(names)
        uclib.uc_reg_read_batch(self._uch, batch[0], batch[2], len(names))
        return [v.value for v in batch[1]]

    def set_regs(self, names, values):
        """Write several registers in one crossing (uc_reg_write_batch)."""
        batch = self._batch(names)
        for cell, value in zip(batch[1], values):
            cell.value = value & 0xFFFFFFFFFFFFFFFF
        uclib.uc_reg_write_batch(self._uch, batch[0], batch[2], len(names))

    def _batch(self, names):
        """ctypes arrays for a tuple of register names, built once and reused."""
        batch = self._batches.get(names)
        if batch is None:
            ids = (ctypes.c_int * len(names))(*(REG_IDS[n] for n in names))
            cells = [_u64() for _ in names]
            ptrs = (ctypes.c_void_p * len(names))(*(ctypes.addressof(c) for c in cells))
            batch = self._batches[names] = (ids, cells, ptrs)
        return batch

    def table_reg(self, name):
        """(base, limit) of GDTR or IDTR (base is virtual)."""
        rid = {"gdtr": x86.UC_X86_REG_GDTR, "idtr": x86.UC_X86_REG_IDTR}[name]
        _sel, base, limit, _flags = self.uc.reg_read(rid)
        return base, limit

    def context_save(self):
        return self.uc.context_save()

    def context_restore(self, ctx):
        self.uc.context_restore(ctx)

    # -- memory -----------------------------------------------------------------------

    def flush_code(self, va, size):
        """Drop translated blocks covering [va, va+size): a write to code is not seen
        otherwise.  Takes effect at the next block boundary, also from inside a hook.
        (uc_ctl called directly: the binding's ctl_remove_cache costs more than the
        invalidation itself, and every arm, disarm and slot write comes here.)"""
        status = uclib.uc_ctl(self._uch, _CTL_REMOVE_CACHE, _u64(va), _u64(va + size))
        if status != uc_const.UC_ERR_OK:
            raise MachineError(f"uc_ctl(TB_REMOVE_CACHE) failed: {UcError(status)}")

    def flush_all_code(self):
        """Drop every translated block (after RAM changed under the whole cache: a
        restore onto a snapshot other than the one RAM is a view of).  The block clock
        forgets them too: their code addresses will be reused."""
        self.uc.ctl_flush_tb()
        self._clock.clear_cache()

    def flush_tlb(self):
        """Drop the soft TLB (guest virtual -> host pages): after the page tables or the
        CPU context were put back behind the CPU's back (a snapshot restore)."""
        status = uclib.uc_ctl(self._uch, ctypes.c_int(
            (uc_const.UC_CTL_IO_WRITE << 30) | uc_const.UC_CTL_TLB_FLUSH))
        if status != uc_const.UC_ERR_OK:
            raise MachineError(f"uc_ctl(TLB_FLUSH) failed: {UcError(status)}")

    @property
    def ram_address(self):
        """The host address of guest RAM (what Unicorn was given with mem_map_ptr)."""
        return ctypes.addressof(self._ram_obj)
