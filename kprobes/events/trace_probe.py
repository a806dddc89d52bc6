"""The fetch-argument and type layer every probe kind shares, after Linux's
kernel/trace/trace_probe.c (with the limits of trace_probe.h and the fetch and print loops
of trace_probe_tmpl.h).

This module owns:
  * the limits (16 fetch instructions, 63-character argument text, 64-element arrays,
    3072-byte events, 128 arguments) and the C-library number and name rules
    (kstrto*(), simple_strtoul(), is_good_name()) the language is parsed with;
  * the type table (probe_fetch_types[]) with Linux's print formats;
  * the fetch-argument parser (traceprobe_parse_probe_arg() and its helpers), which builds
    the same instruction list Linux builds, so every limit fails where Linux fails and
    every error lands on Linux's column; the event-name and `$arg` checks every probe
    command makes;
  * FetchArg: the evaluation of a fetch argument against a probe context (registers,
    stack, memory, symbols) and the printing of its value; the argument-list helpers
    (print_fmt, entry data, trace_probe_compare_arg_type()).

It knows no command letter, no probe point and no event list: those are trace_kprobe's.
Errors come from kprobes.events.errors.
Must not import: unicorn, the kprobes core, kprobes.events.trace_output,
kprobes.events.trace_kprobe.  From emu it takes only MemoryFault and the register table.
"""

import errno as _errno
from dataclasses import dataclass

from emu.cpu import REG_NAMES
from emu.errors import MemoryFault
from emu.memory import PAGE_SIZE
from kprobes.events.errors import ErrorCode, LogError, ProbeCommandError

# -- limits (trace_probe.h, trace.h) --------------------------------------------------------------

MAX_TRACE_ARGS = 128
MAX_ARGSTR_LEN = 63
MAX_ARRAY_LEN = 64
MAX_ARG_NAME_LEN = 32
MAX_STRING_SIZE = 4096              # PATH_MAX: at most 4095 characters and the NUL
MAX_PROBE_EVENT_SIZE = 3072
MAX_EVENT_NAME_LEN = 64             # group and event names are at most 63 characters
FETCH_INSN_MAX = 16                 # the last slot is the END sentinel
# The guest's THREAD_SIZE (toykernel asm-offsets); Linux bounds $stackN and $argN by
# THREAD_SIZE / sizeof(long) and reads $stackN only inside the current THREAD_SIZE stack.
THREAD_SIZE = 8192
# x86_64's TASK_SIZE_MAX with 4-level paging, (1 << 47) - PAGE_SIZE: user fetches must stay
# below it.
TASK_SIZE_MAX = (1 << 47) - 4096
# Below this a kernel fetch faults on a guest with a user space: x86_64's
# copy_from_kernel_nofault_allowed() refuses user addresses and the guard page after them.
KERNEL_FETCH_FLOOR = TASK_SIZE_MAX + 4096
FAULT_STRING = "(fault)"

UINT_MAX = (1 << 32) - 1
_MASK64 = (1 << 64) - 1


# -- C library helpers, with the kernel's rules ----------------------------------------------------

_DIGITS = "0123456789"
_XDIGITS = "0123456789abcdefABCDEF"
_ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def isdigit(c):
    return c != "" and c in _DIGITS


def isalpha(c):
    return c != "" and c in _ALPHA


def _fixup_radix(s, base):
    """_parse_integer_fixup_radix(): base 0 means 0x.. hex, 0.. octal, else decimal."""
    if base == 0:
        if s[:1] == "0":
            base = 16 if s[1:2] in ("x", "X") and s[2:3] != "" and s[2:3] in _XDIGITS else 8
        else:
            base = 10
    if base == 16 and s[:1] == "0" and s[1:2] in ("x", "X"):
        s = s[2:]
    return s, base


def _parse_digits(s, base):
    value, n = 0, 0
    for ch in s:
        d = int(ch, 16) if ch in _XDIGITS else 99
        if d >= base:
            break
        value = value * base + d
        n += 1
    return value, n


def _kstrtoull_raw(s, base):
    s, base = _fixup_radix(s, base)
    value, n = _parse_digits(s, base)
    rest = s[n:]
    if n == 0 or rest not in ("", "\n") or value > _MASK64:
        return None
    return value


def kstrtoul(s, base=0):
    """kstrtoul(): the whole string must be a number (a leading '+' is allowed); None if not."""
    if s[:1] == "+":
        s = s[1:]
    return _kstrtoull_raw(s, base)


def kstrtol(s, base=0):
    """kstrtol(): like kstrtoul with an optional '-', within the range of a long."""
    if s[:1] == "-":
        v = _kstrtoull_raw(s[1:], base)
        if v is None or v > 1 << 63:
            return None
        return -v
    v = kstrtoul(s, base)
    if v is None or v >= 1 << 63:
        return None
    return v


def kstrtouint(s, base=0):
    v = kstrtoul(s, base)
    return None if v is None or v > UINT_MAX else v


def simple_strtoul(s, base=0):
    """simple_strtoul(): parse what can be parsed; returns (value, end index)."""
    t, base = _fixup_radix(s, base)
    skipped = len(s) - len(t)
    value, n = _parse_digits(t, base)
    return value & _MASK64, skipped + n


def is_good_name(name):
    """A C identifier: what Linux accepts for event and argument names."""
    if not (isalpha(name[:1]) or name[:1] == "_"):
        return False
    return all(isalpha(c) or isdigit(c) or c == "_" for c in name[1:])


def is_good_system_name(name):
    """Group names may also contain '-' (is_good_system_name())."""
    if not (isalpha(name[:1]) or name[:1] in ("_", "-")):
        return False
    return all(isalpha(c) or isdigit(c) or c in "_-" for c in name[1:])


# -- fetch types ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FetchType:
    """One entry of probe_fetch_types[]: compared by identity, like Linux compares pointers."""

    name: str
    size: int
    is_signed: bool
    is_string: bool
    fmt: str          # the print format Linux puts in print_fmt
    fmttype: str      # the field type in the format file

    def __repr__(self):
        return f"<FetchType {self.name}>"


def _basic(name, size, signed, fmt, fmttype=None):
    return FetchType(name, size, signed, False, fmt, fmttype or name)


_STRING_FMT = '\\"%s\\"'
FETCH_TYPES = {t.name: t for t in (
    FetchType("string", 4, True, True, _STRING_FMT, "__data_loc char[]"),
    FetchType("ustring", 4, True, True, _STRING_FMT, "__data_loc char[]"),
    FetchType("symstr", 4, True, True, _STRING_FMT, "__data_loc char[]"),
    _basic("u8", 1, False, "%u"), _basic("u16", 2, False, "%u"),
    _basic("u32", 4, False, "%u"), _basic("u64", 8, False, "%Lu"),
    _basic("s8", 1, True, "%d"), _basic("s16", 2, True, "%d"),
    _basic("s32", 4, True, "%d"), _basic("s64", 8, True, "%Ld"),
    _basic("x8", 1, False, "0x%x", "u8"), _basic("x16", 2, False, "0x%x", "u16"),
    _basic("x32", 4, False, "0x%x", "u32"), _basic("x64", 8, False, "0x%Lx", "u64"),
    _basic("char", 1, False, "'%c'", "u8"),
    _basic("symbol", 8, False, "%pS", "u64"),
)}
DEFAULT_FETCH_TYPE = "x64"          # x##BITS_PER_LONG


def find_fetch_type(name):
    """find_fetch_type(): None means the default type; a bitfield `b...@.../N` is the uN
    container type; unknown names give None."""
    if name is None:
        name = DEFAULT_FETCH_TYPE
    if name[:1] == "b":
        slash = name.find("/")
        if slash < 0:
            return None
        bs = kstrtoul(name[slash + 1:], 0)
        return FETCH_TYPES.get(f"u{bs}") if bs in (8, 16, 32, 64) else None
    return FETCH_TYPES.get(name)


# -- registers, stack, arguments (arch/x86) -------------------------------------------------------

# The names %REG accepts: regoffset_table[] of arch/x86/kernel/ptrace.c on x86_64, which
# is every pt_regs slot.  That is the pt_regs view's table (emu.cpu.REG_NAMES, defined in
# C) plus orig_ax, the one slot the view does not hold: at a kprobe hit it is always -1
# (see _reg()).  No alias: `%rax` is refused, as Linux refuses it.
REGISTER_NAMES = frozenset(REG_NAMES) | {"orig_ax"}
# regs_get_kernel_argument(): the SysV argument registers, then the stack.
ARGUMENT_REGISTERS = ("di", "si", "dx", "cx", "r8", "r9")


def _reg(regs, name):
    try:
        return getattr(regs, name) & _MASK64
    except AttributeError:
        if name == "orig_ax":
            # A kprobe hit is an int3 exception: the entry code pushes -1 as orig_ax.
            return _MASK64
        raise


def _read(ctx, addr, size):
    """size bytes at addr as a little-endian number; MemoryFault if unmapped."""
    data = ctx.read(addr & _MASK64, size)
    return int.from_bytes(data, "little")


def _user(addr, size):
    """access_ok() of copy_from_user(): a user fetch (+u, ustring) of `size` bytes at
    `addr` must lie below TASK_SIZE_MAX; a kernel address faults (MemoryFault) without
    being read."""
    addr &= _MASK64
    if addr + size > TASK_SIZE_MAX:
        raise MemoryFault(addr)
    return addr


def _user_reader(ctx):
    """How a user fetch reads: the context's read_user where it has one (a guest with a
    user space, whose kernel fetches refuse user addresses), else its read."""
    return getattr(ctx, "read_user", ctx.read)


def _read_user(ctx, addr, size):
    data = _user_reader(ctx)(_user(addr, size), size)
    return int.from_bytes(data, "little")


def _read_user_cstring(ctx, addr):
    """strncpy_from_user(): a kernel address faults; a string must end (its NUL) below
    TASK_SIZE_MAX."""
    return _read_cstring(ctx, _user(addr, 1), end=TASK_SIZE_MAX, read=_user_reader(ctx))


def _stack_nth(ctx, n, thread_size):
    """regs_get_kernel_stack_nth(): 0 outside the current stack or on a fault."""
    sp = _reg(ctx.regs, "sp")
    addr = (sp + 8 * n) & _MASK64
    ts = getattr(ctx, "thread_size", None) or thread_size
    if addr & ~(ts - 1) != sp & ~(ts - 1):
        return 0
    try:
        return _read(ctx, addr, 8)
    except MemoryFault:
        return 0


def kernel_argument(ctx, n, thread_size=THREAD_SIZE):
    """regs_get_kernel_argument(regs, n): argument n (from 0) at a function entry; the
    seventh and later are on the stack above the return address."""
    if n < len(ARGUMENT_REGISTERS):
        return _reg(ctx.regs, ARGUMENT_REGISTERS[n])
    return _stack_nth(ctx, n - len(ARGUMENT_REGISTERS) + 1, thread_size)


def _read_cstring(ctx, addr, end=None, read=None):
    """A NUL-terminated string, like fetch_store_strlen() + strncpy_from_kernel_nofault():
    at most MAX_STRING_SIZE - 1 characters; MemoryFault if a byte before the NUL is
    unmapped, or at or past `end` (a user string's TASK_SIZE_MAX).  `read`: how bytes
    are read (ctx.read, a kernel fetch, by default)."""
    out = bytearray()
    addr &= _MASK64
    read = read or ctx.read
    while len(out) < MAX_STRING_SIZE:
        n = min(PAGE_SIZE - addr % PAGE_SIZE, MAX_STRING_SIZE - len(out))
        if end is not None:
            if addr >= end:
                raise MemoryFault(addr)
            n = min(n, end - addr)
        try:
            chunk = bytes(read(addr, n))
        except MemoryFault:
            chunk = bytearray()
            for i in range(n):           # find the first bad byte, unless a NUL comes first
                chunk += read(addr + i, 1)
                if chunk[-1] == 0:
                    break
        nul = chunk.find(0)
        if nul >= 0:
            out += chunk[:nul]
            break
        out += chunk
        addr = (addr + n) & _MASK64
    return bytes(out[:MAX_STRING_SIZE - 1]).decode("utf-8", "backslashreplace")


def split_symbol_offset(text):
    """traceprobe_split_symbol_offset(): `SYM[+|-OFFS]` as (SYM, OFFS), cut at the first
    '+' or '-'; OFFS is 0 when there is none and None when it is not a number."""
    cut = min((i for i in (text.find("+"), text.find("-")) if i >= 0), default=-1)
    if cut < 0:
        return text, 0
    return text[:cut], kstrtol(text[cut:], 0)


def lookup_symbol(symbols, name):
    """kallsyms_lookup_name(), with the `MOD:SYM` form; None if unknown."""
    if ":" in name:
        mod, sym = name.split(":", 1)
        for s in symbols:
            if s.name == sym and getattr(s, "module", None) == mod:
                return s.addr
        return None
    return symbols.lookup_name(name)


def sprint_symbol(symbols, addr):
    """%pS / sprint_symbol(): `sym+0xoff/0xsize [mod]`, or `0x...` outside any symbol."""
    if symbols is None:
        return f"0x{addr:x}"
    return symbols.format(addr)


# -- the fetch instructions -----------------------------------------------------------------------

class _Fault:
    """The value of a fetch whose memory read faulted.

    Linux prints "(fault)" only for strings; a numeric field whose read faults keeps
    whatever the ring buffer held.  Here every type prints "(fault)", so a trace is
    deterministic and a bad pointer is visible."""

    def __repr__(self):
        return "FAULT"


FAULT = _Fault()

# Stage-1 ops that give the value an address-taking store works on.
_STAGE1 = frozenset({"reg", "stack", "stackp", "retval", "imm", "comm", "data", "arg",
                     "edata", "current", "symbol"})
_DEREFS = frozenset({"deref", "uderef"})


class FetchArg:
    """One parsed fetch argument: `name=comm` with its type and instruction list.

    `code` mirrors Linux's fetch_insn array, as tuples:
      stage 1  ("reg", name) ("stack", n) ("stackp",) ("retval",) ("imm", value)
               ("comm",) ("data", text) ("arg", n) ("edata", n) ("current",)
               ("symbol", "SYM[+-off]") followed by ("imm", address-or-None)
      stage 2  ("deref", offset) ("uderef", offset)
      stage 3  ("st_raw", size) ("st_mem", offset, size) ("st_umem", offset, size)
               ("st_string", offset) ("st_ustring", offset) ("st_symstr", offset)
      stage 4  ("mod_bf", lshift, rshift, basesize)
      stage 5  ("lp_array", count)
    """

    def __init__(self, name, comm, type_, count, code, thread_size):
        self.name = name
        self.comm = comm            # the argument text after `name=`, as read back
        self.type = type_
        self.count = count          # 0 for a scalar, N for TYPE[N]
        self.code = code
        self.thread_size = thread_size

    def __repr__(self):
        return f"<FetchArg {self.name}={self.comm}>"

    @property
    def text(self):
        return f"{self.name}={self.comm}"

    def update(self, symbols):
        """traceprobe_update_arg(): resolve every `@SYM[+|-off]` of this argument now.
        Raises ProbeCommandError with Linux's errno (ENOENT unknown symbol, EINVAL bad
        offset)."""
        for i, op in enumerate(self.code):
            if op[0] == "symbol":
                self.code[i + 1] = ("imm", _resolve_symbol_ref_errno(symbols, op[1]))

    def native_code(self):
        """This argument as a native fetch program (what a C trap path can evaluate without
        this class), or None when it needs more than a fixed-size number: a string, an
        array, $comm, $retval, a return probe's entry data, an unresolved @SYM.

        (source, derefs, store, store_off, size, bitfield):
          source    ("reg", NAME) -- a pt_regs slot, `ip` and `flags` as trapped;
                    ("imm", VALUE); ("stack", N) -- regs_get_kernel_stack_nth();
          derefs    ((user, offset), ...), each val = *(u64 *)(val + offset);
          store     "raw" (the value) or "mem" / "umem" (`size` bytes at val + store_off);
          bitfield  (lshift, rshift, bits) or None.
        The same steps as fetch() below, which stays the reference."""
        if self.count or self.type.is_string:
            return None
        code = self.code
        op = code[0]
        i = 1
        if op[0] == "reg":
            source = ("imm", _MASK64) if op[1] == "orig_ax" else op
        elif op[0] == "stackp":
            source = ("reg", "sp")
        elif op[0] in ("imm", "stack"):
            source = op
        elif op[0] == "arg":
            n = op[1]
            source = ("reg", ARGUMENT_REGISTERS[n]) if n < len(ARGUMENT_REGISTERS) else \
                ("stack", n - len(ARGUMENT_REGISTERS) + 1)
        elif op[0] == "symbol" and code[1][1] is not None:
            source, i = ("imm", code[1][1]), 2
        else:
            return None
        derefs = []
        while code[i][0] in _DEREFS:
            derefs.append((code[i][0] == "uderef", code[i][1] & _MASK64))
            i += 1
        store = code[i]
        kinds = {"st_raw": "raw", "st_mem": "mem", "st_umem": "umem"}
        if store[0] not in kinds:
            return None
        size, store_off = (store[1], 0) if store[0] == "st_raw" else (store[2], store[1])
        bitfield = None
        if i + 1 < len(code):
            if code[i + 1][0] != "mod_bf" or i + 2 != len(code):
                return None
            _op, lshift, rshift, basesize = code[i + 1]
            bitfield = (lshift, rshift, 8 * basesize)
        return (source, tuple(derefs), kinds[store[0]], store_off & _MASK64, size, bitfield)

    # -- evaluation (process_fetch_insn and process_fetch_insn_bottom) --------------------

    def fetch(self, ctx):
        """The value at this hit: an int (the stored container value, bitfield applied), a
        str for string types, a list for arrays, or FAULT."""
        code = self.code
        if len(code) == 2 and code[0][0] == "reg" and not self.count:
            # The common forms, %REG and +OFF(%REG), without the general walk below (the
            # same steps: the register, the offset, the read, the size's mask).
            store = code[1]
            if store[0] == "st_raw":
                return _reg(ctx.regs, code[0][1]) & ((1 << 8 * store[1]) - 1)
            if store[0] == "st_mem":
                try:
                    return _read(ctx, _reg(ctx.regs, code[0][1]) + store[1], store[2])
                except MemoryFault:
                    return FAULT
        i = 0
        op = code[0]
        if op[0] == "symbol":
            i = 1
            val = code[1][1]
            if val is None:                 # never resolved: resolve now, from ctx.symbols
                val = _resolve_symbol_ref(getattr(ctx, "symbols", None), op[1])
                if val is None:
                    return FAULT
        else:
            val = self._stage1(op, ctx)
            if val is FAULT:
                return val
        i += 1
        lval = val
        while code[i][0] in _DEREFS:
            lval = val
            read = _read_user if code[i][0] == "uderef" else _read
            try:
                val = read(ctx, val + code[i][1], 8)
            except MemoryFault:
                return FAULT
            i += 1
        store = code[i]
        mod = code[i + 1] if i + 1 < len(code) and code[i + 1][0] == "mod_bf" else None
        if not self.count:
            return self._store(store, mod, val, ctx)
        if store[0] in ("st_mem", "st_umem"):
            return [self._store(store, mod, (val + k * store[2]) & _MASK64, ctx)
                    for k in range(self.count)]
        # An array of strings is an array of char pointers: the last dereference is
        # repeated at +8, +16, ... and each pointer's string is read.
        out = [self._store(store, mod, val, ctx)]
        if i == 0 or code[i - 1][0] not in _DEREFS:
            return out + [FAULT] * (self.count - 1)
        deref_off = code[i - 1][1]
        for k in range(1, self.count):
            try:
                ptr = _read(ctx, lval + 8 * k + deref_off, 8)
            except MemoryFault:
                return out + [FAULT] * (self.count - k)
            out.append(self._store(store, mod, ptr, ctx))
        return out

    def _stage1(self, op, ctx):
        kind = op[0]
        if kind == "reg":
            return _reg(ctx.regs, op[1])
        if kind == "imm":
            return op[1]
        if kind == "stack":
            return _stack_nth(ctx, op[1], self.thread_size)
        if kind == "stackp":
            return _reg(ctx.regs, "sp")
        if kind == "retval":
            rv = getattr(ctx, "retval", None)
            return (rv if rv is not None else _reg(ctx.regs, "ax")) & _MASK64
        if kind == "arg":
            return kernel_argument(ctx, op[1], self.thread_size)
        if kind == "edata":
            saved = getattr(ctx, "entry_args", None)
            if saved is None or op[1] >= len(saved):
                return FAULT
            return saved[op[1]] & _MASK64
        if kind == "comm":
            return ctx.comm
        if kind == "data":
            return op[1]
        if kind == "current":
            cur = getattr(ctx, "current", None)
            return FAULT if cur is None else cur & _MASK64
        raise AssertionError(f"not a stage-1 op: {op}")

    def _store(self, store, mod, val, ctx):
        kind = store[0]
        try:
            if kind == "st_raw":
                v = val & ((1 << 8 * store[1]) - 1)
            elif kind == "st_mem":
                v = _read(ctx, val + store[1], store[2])
            elif kind == "st_umem":
                v = _read_user(ctx, val + store[1], store[2])
            elif kind in ("st_string", "st_ustring"):
                if isinstance(val, str):      # $comm and "..." point at the text itself
                    return val
                if kind == "st_ustring":
                    return _read_user_cstring(ctx, val + store[1])
                return _read_cstring(ctx, val + store[1])
            elif kind == "st_symstr":
                return sprint_symbol(getattr(ctx, "symbols", None), (val + store[1]) & _MASK64)
            else:
                raise AssertionError(f"not a store op: {store}")
        except MemoryFault:
            return FAULT
        if mod is not None:
            _op, lshift, rshift, basesize = mod
            bits = 8 * basesize
            v = ((v << lshift) & ((1 << bits) - 1)) >> rshift
        return v

    # -- printing (the print_type_* functions, trace_probe_print_args) ------------------

    def json_value(self, value, symbols=None):
        """The value typed for JSON: an integer as a number (signed or not as the type
        says), a string as a string, a char as a one-character string, a symbol as
        `sym+0xoff/0xsize`, an array as a list, a fault as None."""
        if self.count:
            if not isinstance(value, list):
                return None
            return [_json_one(self.type, v, symbols) for v in value]
        return _json_one(self.type, value, symbols)

    def payload_size(self, value):
        """Bytes this value takes in a ring-buffer record: the type's size (times the
        count of an array); for a string its __data_loc word and the string with its
        NUL, as Linux stores dynamic data."""
        if self.type.is_string:
            strings = value if isinstance(value, list) else [value]
            return sum(4 + (len(v.encode()) + 1
                            if isinstance(v, str) else 4) for v in strings)
        return self.type.size * (self.count or 1)

    def format_value(self, value, symbols=None):
        if self.count:
            if not isinstance(value, list):
                return FAULT_STRING
            return "{" + ",".join(_print_one(self.type, v, symbols) for v in value) + "}"
        return _print_one(self.type, value, symbols)


def _json_one(t, v, symbols):
    """One value as its type says: an int (sign applied), a str, None for a fault."""
    if v is FAULT:
        return None
    if t.is_string:
        return v
    if t.name == "char":
        return chr(v & 0xff)
    if t.name == "symbol":
        return sprint_symbol(symbols, v & _MASK64)
    bits = 8 * t.size
    v &= (1 << bits) - 1
    if t.is_signed and v >> (bits - 1):
        v -= 1 << bits
    return v


def _print_one(t, v, symbols):
    """One value as the trace prints it (the type's print format)."""
    value = _json_one(t, v, symbols)
    if value is None:
        return FAULT_STRING
    if t.is_string:
        return f'"{value}"'
    if t.name == "char":
        return f"'{value}'"
    if t.name == "symbol" or t.name[0] != "x":
        return str(value)
    return f"0x{value:x}"


def _resolve_symbol_ref(symbols, text):
    """traceprobe_update_arg() for one `@SYM[+|-off]`: (address) or None."""
    if symbols is None:
        return None
    try:
        return _resolve_symbol_ref_errno(symbols, text)
    except ProbeCommandError:
        return None


def _resolve_symbol_ref_errno(symbols, text):
    name, offset = split_symbol_offset(text)
    if offset is None:
        raise ProbeCommandError(_errno.EINVAL)
    addr = lookup_symbol(symbols, name)
    if not addr:
        raise ProbeCommandError(_errno.ENOENT)
    return (addr + offset) & _MASK64


# -- the fetch-argument parser --------------------------------------------------------------------

class _ArgParser:
    """Parses one argument body into FetchArg code, keeping `offset` (ctx->offset) the way
    Linux moves it, so every error lands on Linux's column."""

    def __init__(self, is_return, on_entry, thread_size, size_so_far):
        self.is_return = is_return          # TPARG_FL_RETURN
        self.on_entry = on_entry            # TPARG_FL_FENTRY (and not a return probe)
        self.thread_size = thread_size
        self.max_stack = thread_size // 8   # PARAM_MAX_STACK
        self.size = size_so_far             # tp->size: bytes of the event so far
        self.offset = 0
        self.code = []

    def _push(self, op, err=ErrorCode.TOO_MANY_OPS, errno=_errno.EINVAL):
        """Take the next fetch_insn slot; the 16th is the END sentinel."""
        if len(self.code) >= FETCH_INSN_MAX - 1:
            raise LogError(err, self.offset, errno)
        self.code.append(op)

    def parse_body(self, body, name, thread_size):
        """traceprobe_parse_probe_arg_body()."""
        if len(body) > MAX_ARGSTR_LEN:
            raise LogError(ErrorCode.ARG_TOO_LONG, self.offset, _errno.E2BIG)
        if not body:
            raise LogError(ErrorCode.NO_ARG_BODY, self.offset)
        arg, tname, count, type_ = self._parse_type(body)
        type_offset = len(arg) + 1 if tname is not None else 0
        self._parse_fetch(arg)
        self.size += type_.size * (count or 1)
        if self.size > MAX_PROBE_EVENT_SIZE:
            raise LogError(ErrorCode.EVENT_TOO_BIG, self.offset, _errno.E2BIG)
        self._finalize(type_, tname, count, type_offset)
        return FetchArg(name, body, type_, count, self.code, thread_size)

    def _parse_type(self, body):
        """parse_probe_arg_type(): split `ARG:TYPE[N]` and look the type up."""
        colon = body.find(":")
        arg, tname, count = body, None, 0
        if colon >= 0:
            arg, tname = body[:colon], body[colon + 1:]
            bra = tname.find("[")
            if bra >= 0:
                num_at = colon + 1 + bra + 1
                rest = tname[bra + 1:]
                tname = tname[:bra]
                ket = rest.find("]")
                if ket < 0:
                    raise LogError(ErrorCode.ARRAY_NO_CLOSE, self.offset + num_at + len(rest))
                if ket + 1 != len(rest):
                    raise LogError(ErrorCode.BAD_ARRAY_SUFFIX, self.offset + num_at + ket + 1)
                count = kstrtouint(rest[:ket], 0)
                if not count:
                    raise LogError(ErrorCode.BAD_ARRAY_NUM, self.offset + num_at)
                if count > MAX_ARRAY_LEN:
                    raise LogError(ErrorCode.ARRAY_TOO_BIG, self.offset + num_at)
        offs = colon + 1 if colon >= 0 else 0
        if arg in ("$comm", "$COMM") or arg.startswith('\\"'):
            if count or (tname is not None and tname != "string"):
                raise LogError(ErrorCode.NEED_STRING_TYPE, self.offset + offs)
            type_ = FETCH_TYPES["string"]
        else:
            type_ = find_fetch_type(tname)
        if type_ is None:
            raise LogError(ErrorCode.BAD_TYPE, self.offset + offs)
        return arg, tname, count, type_

    def _parse_fetch(self, arg):
        """parse_probe_arg(): recursive, appends to self.code."""
        start = len(self.code)
        c = arg[:1]
        if c == "$":
            self._parse_var(arg)
        elif c == "%":
            if arg[1:] not in REGISTER_NAMES:
                raise LogError(ErrorCode.BAD_REG_NAME, self.offset)
            self.code.append(("reg", arg[1:]))
        elif c == "@":
            if isdigit(arg[1:2]):
                addr = kstrtoul(arg[1:], 0)
                if addr is None:
                    raise LogError(ErrorCode.BAD_MEM_ADDR, self.offset)
                self.code.append(("imm", addr))
            elif arg[1:2] == "+":
                raise LogError(ErrorCode.FILE_ON_KPROBE, self.offset)
            else:
                self.code.append(("symbol", arg[1:]))
                self._push(("imm", None))
            self._push(("deref", 0))
        elif c in ("+", "-"):
            self._parse_deref(arg)
        elif c == "\\":
            if arg[1:2] == '"':
                text = arg[2:]
                # An empty body passes Linux's closing-quote test (it looks at the opening
                # quote), giving an empty string.
                if text and text[-1] != '"':
                    raise LogError(ErrorCode.IMMSTR_NO_CLOSE, self.offset + 2 + len(text))
                self.code.append(("data", text[:-1]))
            else:
                imm = _str_to_immediate(arg[1:])
                if imm is None:
                    raise LogError(ErrorCode.BAD_IMM, self.offset + 1)
                self.code.append(("imm", imm))
        elif isalpha(c) or c == "_":
            # A BTF variable name; this kernel has no BTF.
            raise LogError(ErrorCode.NOSUP_BTFARG, self.offset)
        if len(self.code) == start:
            raise LogError(ErrorCode.BAD_FETCH_ARG, self.offset)

    def _parse_deref(self, arg):
        """`+|-[u]OFFS(FETCHARG)`, with Linux's pointer arithmetic for the offsets."""
        deref = "deref"
        s = arg
        if s[1:2] == "u":
            deref = "uderef"
            s = s[0] + s[2:]            # arg[1] = arg[0]; arg++
        if s[0] == "+":
            s = s[1:]                   # kstrtol() takes no '+'
        brace = s.find("(")
        if brace < 0:
            raise LogError(ErrorCode.DEREF_NEED_BRACE, self.offset)
        offset = kstrtol(s[:brace], 0)
        if offset is None:
            raise LogError(ErrorCode.BAD_DEREF_OFFS, self.offset)
        self.offset += brace + 1 + (1 if s[:1] != "-" else 0)
        inner = s[brace + 1:]
        close = inner.rfind(")")
        if close < 0:
            raise LogError(ErrorCode.DEREF_OPEN_BRACE, self.offset + len(inner))
        if close + 1 != len(inner):
            # Linux silently drops text after the last ')' (`+0(%ax)+10` reads +0(%ax));
            # kprobe_args_syntax.tc lists it as bad, so it is refused here.
            raise LogError(ErrorCode.BAD_FETCH_ARG, self.offset + close + 1)
        cur = self.offset
        self._parse_fetch(inner[:close])
        self.offset = cur
        if self.code[-1][0] in ("comm", "data"):
            raise LogError(ErrorCode.COMM_CANT_DEREF, self.offset)
        self._push((deref, offset))

    def _parse_var(self, orig):
        """parse_probe_vars(): `$...`."""
        arg = orig[1:]
        err = ErrorCode.BAD_VAR
        if arg.startswith("retval"):
            if self.is_return:
                self.code.append(("retval",))
                return
            err = ErrorCode.RETVAL_ON_PROBE
        elif arg.startswith("stack"):
            rest = arg[5:]
            if rest == "":
                self.code.append(("stackp",))
                return
            if isdigit(rest[:1]):
                n = kstrtoul(rest, 10)
                if n is not None:
                    if n > self.max_stack:
                        err = ErrorCode.BAD_STACK_NUM
                    else:
                        self.code.append(("stack", n))
                        return
        elif arg in ("comm", "COMM"):
            self.code.append(("comm",))
            return
        elif arg == "current":
            self.code.append(("current",))
            return
        elif arg.startswith("arg"):
            n = kstrtoul(arg[3:], 10)
            if n is not None:
                if n == 0 or n > self.max_stack:
                    err = ErrorCode.BAD_ARG_NUM
                elif self.on_entry:
                    self.code.append(("arg", n - 1))
                    return
                elif self.is_return:
                    # The value is saved by the entry handler and read at return.
                    self.code.append(("edata", n - 1))
                    return
                else:
                    err = ErrorCode.NOFENTRY_ARGS
        raise LogError(err, self.offset)

    def _finalize(self, type_, tname, count, type_offset):
        """finalize_fetch_insn(): the store, bitfield and array instructions."""
        code = self.code
        last = code[-1][0]
        at_type = self.offset + type_offset
        if type_.is_string:
            if type_.name == "symstr":
                if last not in ("reg", "stack", "retval", "arg", "deref"):
                    raise LogError(ErrorCode.BAD_SYMSTRING, at_type)
            elif last not in ("deref", "uderef", "imm", "comm", "data"):
                raise LogError(ErrorCode.BAD_STRING, at_type)
            new_slot = (type_.name == "symstr" or last in ("imm", "comm", "data")
                        or bool(count))
            replaced = None if new_slot else code[-1]
            if type_.name == "ustring" or (replaced is not None and replaced[0] == "uderef"):
                kind = "st_ustring"
            elif type_.name == "symstr":
                kind = "st_symstr"
            else:
                kind = "st_string"
            if new_slot:
                self._push((kind, 0))
            else:
                code[-1] = (kind, replaced[1])
        elif last == "deref":
            code[-1] = ("st_mem", code[-1][1], type_.size)
        elif last == "uderef":
            code[-1] = ("st_umem", code[-1][1], type_.size)
        else:
            self._push(("st_raw", type_.size), errno=_errno.E2BIG)
        store = code[-1][0]
        if tname is not None and tname[:1] == "b":
            self._bitfield(tname, type_, at_type)
        if count:
            if store not in ("st_mem", "st_string", "st_ustring"):
                raise LogError(ErrorCode.BAD_STRING, at_type)
            self._push(("lp_array", count), errno=_errno.E2BIG)

    def _bitfield(self, tname, type_, at_type):
        """__parse_bitfield_probe_arg(): `b<width>@<offset>/<container>`."""
        bad = LogError(ErrorCode.BAD_BITFIELD, at_type)
        bw, end = simple_strtoul(tname[1:], 0)
        end += 1
        if bw == 0 or tname[end:end + 1] != "@":
            raise bad
        start = end + 1
        bo, end = simple_strtoul(tname[start:], 0)
        end += start
        if end == start or tname[end:end + 1] != "/":
            raise bad
        if len(self.code) >= FETCH_INSN_MAX - 1:
            raise bad
        bits = 8 * type_.size
        if bits < bw + bo:
            raise bad
        self.code.append(("mod_bf", bits - (bw + bo), bits - bw, type_.size))


def _str_to_immediate(s):
    """str_to_immediate(): `\\IMM` is unsigned, or signed with a leading '-' or '+'."""
    if isdigit(s[:1]):
        return kstrtoul(s, 0)
    if s[:1] in ("-", "+"):
        v = kstrtol(s if s[0] == "-" else s[1:], 0)
        return None if v is None else v & _MASK64
    return None


_RESERVED_FIELD_NAMES = ("common_type", "common_flags", "common_preempt_count", "common_pid",
                         "common_tgid", "__probe_ip", "__probe_ret_ip", "__probe_func")


def parse_event_name(text, offset, group, fail):
    """traceprobe_parse_event_name(): `GROUP/EVENT`, `GROUP.EVENT`, `GROUP/` or `EVENT`;
    returns (group, event-or-None)."""
    slash = text.find("/")
    if slash < 0:
        slash = text.find(".")
    event = text
    if slash >= 0:
        if slash == 0:
            fail(ErrorCode.NO_GROUP_NAME, 0, offset)
        if slash + 1 > MAX_EVENT_NAME_LEN:
            fail(ErrorCode.GROUP_TOO_LONG, 0, offset)
        group = text[:slash]
        if not is_good_system_name(group):
            fail(ErrorCode.BAD_GROUP_NAME, 0, offset)
        event = text[slash + 1:]
        offset += slash + 1
    if event == "":
        if slash >= 0:
            return group, None
        fail(ErrorCode.NO_EVENT_NAME, 0, offset)
    if len(event) >= MAX_EVENT_NAME_LEN:
        fail(ErrorCode.EVENT_TOO_LONG, 0, offset)
    if not is_good_name(event):
        fail(ErrorCode.BAD_EVENT_NAME, 0, offset)
    return group, event


def sanitize_event_name(name):
    """sanitize_event_name(): ':', '.' and '*' after the first character become '_'."""
    return name[:1] + "".join("_" if c in ":.*" else c for c in name[1:])


def check_var_args(words, entry_or_exit, fail):
    """argv_has_var_arg() and the BTF-less end of traceprobe_expand_meta_args(): words that
    begin with `$arg` must be `$argN` or a single `$arg*`, and `$arg*` needs BTF."""
    var_args_at = None
    last = None
    for i, w in enumerate(words):
        if not w.startswith("$arg"):
            continue
        last = i + 2
        if not entry_or_exit:
            fail(ErrorCode.NOFENTRY_ARGS, last)
        if isdigit(w[4:5]):
            continue
        if w[4:5] != "*":
            fail(ErrorCode.BAD_VAR, last)
        if var_args_at is not None:
            fail(ErrorCode.DOUBLE_ARGS, last)
        var_args_at = i
    if var_args_at is not None:
        fail(ErrorCode.NOSUP_BTFARG, last)


def parse_probe_arg(word, i, previous, is_return, on_entry, thread_size, size):
    """traceprobe_parse_probe_arg(): `[NAME=]FETCHARG[:TYPE]`; offsets relative to word."""
    eq = word.find("=")
    if eq >= 0:
        if eq > MAX_ARG_NAME_LEN:
            raise LogError(ErrorCode.ARG_NAME_TOO_LONG, 0)
        if eq == 0:
            raise LogError(ErrorCode.NO_ARG_NAME, 0)
        name, body = word[:eq], word[eq + 1:]
    else:
        name, body = f"arg{i + 1}", word
    if not is_good_name(name):
        raise LogError(ErrorCode.BAD_ARG_NAME, 0)
    if name in _RESERVED_FIELD_NAMES or any(a.name == name for a in previous):
        raise LogError(ErrorCode.USED_ARG_NAME, 0)
    parser = _ArgParser(is_return, on_entry, thread_size, size)
    parser.offset = eq + 1
    arg = parser.parse_body(body, name, thread_size)
    return arg, parser.size


# -- argument lists -------------------------------------------------------------------------------

def compare_arg_type(a, b):
    """trace_probe_compare_arg_type(): 0 if both probes' arguments have the same names,
    types and counts, else the 1-based index of the first difference."""
    if len(a.args) < len(b.args):
        return len(a.args) + 1
    if len(a.args) > len(b.args):
        return len(b.args) + 1
    for i, (x, y) in enumerate(zip(a.args, b.args)):
        if x.type is not y.type or x.count != y.count or x.name != y.name:
            return i + 1
    return 0


def count_entry_args(args):
    """How many entry arguments a return probe with `args` must save at entry (0 for none):
    the highest N of its `$argN` (traceprobe_get_entry_data_size())."""
    n = [op[1] + 1 for a in args for op in a.code if op[0] == "edata"]
    return max(n, default=0)


def set_print_fmt(args, is_return):
    """An event's print_fmt (traceprobe_set_print_fmt())."""
    if is_return:
        fmt, tail = "(%lx <- %lx)", ", REC->__probe_func, REC->__probe_ret_ip"
    else:
        fmt, tail = "(%lx)", ", REC->__probe_ip"
    out = '"' + fmt
    for a in args:
        out += f" {a.name}="
        out += "{" + ",".join([a.type.fmt] * a.count) + "}" if a.count else a.type.fmt
    out += '"' + tail
    for a in args:
        ref = "__get_str({})" if a.type.is_string else "REC->{}"
        names = [f"{a.name}[{j}]" for j in range(a.count)] if a.count else [a.name]
        out += "".join(", " + ref.format(n) for n in names)
    return out


def store_trace_args(args, ctx):
    """Every argument's value at this hit (what Linux stores in the ring buffer,
    store_trace_args())."""
    return [a.fetch(ctx) for a in args]


def print_probe_args(args, values, symbols=None):
    """The ` name=value ...` tail of a trace line (print_probe_args())."""
    return "".join(f" {a.name}={a.format_value(v, symbols)}" for a, v in zip(args, values))


def format_args(defn, ctx):
    """The ` name=value ...` tail of a trace line for `defn`'s arguments, fetched and
    printed now."""
    return print_probe_args(defn.args, store_trace_args(defn.args, ctx),
                            getattr(ctx, "symbols", None))
