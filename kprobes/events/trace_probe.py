"""The probe-event language shared by every probe kind, after Linux's kernel/trace/trace_probe.c.

This module owns:
  * the fetch-argument parser (traceprobe_parse_probe_arg and its helpers), which builds the
    same instruction list Linux builds, so the limits (16 fetch instructions, 63-character
    argument text, 64-element arrays, 3072-byte events) fail where Linux fails;
  * the type table with Linux's print formats, the evaluation of a fetch argument against a
    probe context, and the printing of its value;
  * the parse of one kprobe_events line into a ProbeDefinition (the parsing half of
    trace_kprobe.c's create path) and of a `-:` line into a DeleteCommand.

It does not register probes, keep the event list, enable/disable or count hits: that is the
command layer (trace_kprobe).  Helpers for the parts of that layer that Linux words as
probe-event errors (multi-probe append checks, registration errnos) are here so the caret
positions stay in one place.

The error catalogue and the error_log caret are kprobes.events.errors'; the rest of a
trace line is kprobes.events.trace_output's.
Must not import: unicorn.  From emu it takes only MemoryFault and the register table.
"""

import errno as _errno
from dataclasses import dataclass, field

from emu.cpu import REG_NAMES
from emu.errors import MemoryFault
from kprobes.events.errors import ErrorCode, LogError, ProbeCommandError, ProbeSyntaxError

# -- limits (trace_probe.h, trace.h, kprobes.h) -------------------------------------------------

MAX_TRACE_ARGS = 128
MAX_ARGSTR_LEN = 63
MAX_ARRAY_LEN = 64
MAX_ARG_NAME_LEN = 32
MAX_STRING_SIZE = 4096              # PATH_MAX: at most 4095 characters and the NUL
MAX_PROBE_EVENT_SIZE = 3072
MAX_EVENT_NAME_LEN = 64             # group and event names are at most 63 characters
FETCH_INSN_MAX = 16                 # the last slot is the END sentinel
KRETPROBE_MAXACTIVE_MAX = 4096
KPROBE_EVENT_SYSTEM = "kprobes"
# The guest's THREAD_SIZE (toykernel asm-offsets); Linux bounds $stackN and $argN by
# THREAD_SIZE / sizeof(long) and reads $stackN only inside the current THREAD_SIZE stack.
THREAD_SIZE = 8192
FAULT_STRING = "(fault)"

_UINT_MAX = (1 << 32) - 1
_MASK64 = (1 << 64) - 1
_PAGE = 4096


# -- C library helpers, with the kernel's rules ----------------------------------------------------

_DIGITS = "0123456789"
_XDIGITS = "0123456789abcdefABCDEF"
_ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _isdigit(c):
    return c != "" and c in _DIGITS


def _isalpha(c):
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
    return None if v is None or v > _UINT_MAX else v


def simple_strtoul(s, base=0):
    """simple_strtoul(): parse what can be parsed; returns (value, end index)."""
    t, base = _fixup_radix(s, base)
    skipped = len(s) - len(t)
    value, n = _parse_digits(t, base)
    return value & _MASK64, skipped + n


def is_good_name(name):
    """A C identifier: what Linux accepts for event and argument names."""
    if not (_isalpha(name[:1]) or name[:1] == "_"):
        return False
    return all(_isalpha(c) or _isdigit(c) or c == "_" for c in name[1:])


def is_good_system_name(name):
    """Group names may also contain '-' (is_good_system_name())."""
    if not (_isalpha(name[:1]) or name[:1] in ("_", "-")):
        return False
    return all(_isalpha(c) or _isdigit(c) or c in "_-" for c in name[1:])


def _argv_split(line):
    """argv_split(): words separated by C whitespace; no quoting."""
    return line.split()


def split_commands(text):
    """The lines a kprobe_events write runs, like trace_parse_run_command(): each line up to
    its first '#', blank lines dropped."""
    out = []
    for line in text.split("\n"):
        line = line.split("#", 1)[0]
        if line.strip():
            out.append(line)
    return out


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


def _read_cstring(ctx, addr):
    """A NUL-terminated string, like fetch_store_strlen() + strncpy_from_kernel_nofault():
    at most MAX_STRING_SIZE - 1 characters; MemoryFault if a byte before the NUL is
    unmapped."""
    out = bytearray()
    addr &= _MASK64
    while len(out) < MAX_STRING_SIZE:
        n = min(_PAGE - addr % _PAGE, MAX_STRING_SIZE - len(out))
        try:
            chunk = bytes(ctx.read(addr, n))
        except MemoryFault:
            chunk = bytearray()
            for i in range(n):           # find the first bad byte, unless a NUL comes first
                chunk += ctx.read(addr + i, 1)
                if chunk[-1] == 0:
                    break
        nul = chunk.find(0)
        if nul >= 0:
            out += chunk[:nul]
            break
        out += chunk
        addr = (addr + n) & _MASK64
    return bytes(out[:MAX_STRING_SIZE - 1]).decode("utf-8", "backslashreplace")


def _lookup_symbol(symbols, name):
    """kallsyms_lookup_name(), with the `MOD:SYM` form; None if unknown."""
    if ":" in name:
        mod, sym = name.split(":", 1)
        for s in symbols:
            if s.name == sym and getattr(s, "module", None) == mod:
                return s.addr
        return None
    return symbols.lookup_name(name)


def _count_symbols(symbols, name):
    """number_of_same_symbols() for validate_probe_symbol(); None when `MOD:` names a module
    that is not loaded (Linux defers such probes)."""
    if ":" in name:
        mod, sym = name.split(":", 1)
        in_mod = [s for s in symbols if getattr(s, "module", None) == mod]
        if not in_mod:
            return None
        return sum(1 for s in in_mod if s.name == sym)
    return sum(1 for s in symbols if s.name == name)


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

    # -- evaluation (process_fetch_insn and process_fetch_insn_bottom) --------------------

    def fetch(self, ctx):
        """The value at this hit: an int (the stored container value, bitfield applied), a
        str for string types, a list for arrays, or FAULT."""
        code = self.code
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
            try:
                val = _read(ctx, val + code[i][1], 8)
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
            elif kind in ("st_mem", "st_umem"):
                v = _read(ctx, val + store[1], store[2])
            elif kind in ("st_string", "st_ustring"):
                if isinstance(val, str):      # $comm and "..." point at the text itself
                    return val
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

    def format_value(self, value, symbols=None):
        if self.count:
            if not isinstance(value, list):
                return FAULT_STRING
            return "{" + ",".join(_print_one(self.type, v, symbols) for v in value) + "}"
        return _print_one(self.type, value, symbols)


def _print_one(t, v, symbols):
    if v is FAULT:
        return FAULT_STRING
    if t.is_string:
        return f'"{v}"'
    if t.name == "char":
        return f"'{chr(v & 0xff)}'"
    if t.name == "symbol":
        return sprint_symbol(symbols, v & _MASK64)
    bits = 8 * t.size
    v &= (1 << bits) - 1
    if t.is_signed and v >> (bits - 1):
        v -= 1 << bits
    if t.name[0] == "x":
        return f"0x{v:x}"
    return str(v)


def _resolve_symbol_ref(symbols, text):
    """traceprobe_update_arg() for one `@SYM[+|-off]`: (address) or None."""
    if symbols is None:
        return None
    try:
        return _resolve_symbol_ref_errno(symbols, text)
    except ProbeCommandError:
        return None


def _resolve_symbol_ref_errno(symbols, text):
    cut = min((i for i in (text.find("+"), text.find("-")) if i >= 0), default=-1)
    offset = 0
    name = text
    if cut >= 0:
        offset = kstrtol(text[cut:], 0)
        if offset is None:
            raise ProbeCommandError(_errno.EINVAL)
        name = text[:cut]
    addr = _lookup_symbol(symbols, name)
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
            if _isdigit(arg[1:2]):
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
        elif _isalpha(c) or c == "_":
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
            if _isdigit(rest[:1]):
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
    if _isdigit(s[:1]):
        return kstrtoul(s, 0)
    if s[:1] in ("-", "+"):
        v = kstrtol(s if s[0] == "-" else s[1:], 0)
        return None if v is None else v & _MASK64
    return None


_RESERVED_FIELD_NAMES = ("common_type", "common_flags", "common_preempt_count", "common_pid",
                         "common_tgid", "__probe_ip", "__probe_ret_ip", "__probe_func")


# -- whole commands -------------------------------------------------------------------------------

@dataclass
class ProbeDefinition:
    """A parsed `p`/`r` kprobe_events line.

    `symbol` (with any `MOD:` prefix) and `offset` for a symbol probe, `addr` for an address
    probe; `kind` is "r" for `r...` and for `p ...%return`.  `argv` and `command` are the
    words and the command as Linux rebuilds them for error carets.
    """

    kind: str
    group: str
    event: str
    symbol: str
    offset: int
    addr: int
    maxactive: int
    args: list
    argv: tuple
    on_func_entry: bool = False     # TPARG_FL_FENTRY: $argN reads the argument registers
    event_generated: bool = False
    thread_size: int = THREAD_SIZE
    symbols_resolved: bool = field(default=False, compare=False)

    @property
    def is_return(self):
        return self.kind == "r"

    @property
    def command(self):
        return " ".join(self.argv)

    @property
    def probe_point(self):
        """The place as kprobe_events prints it: `SYM`, `SYM+OFFS` or `0x<addr>`.

        Linux prints the address with %p, which hashes it unless no_hash_pointers; kpemu
        prints the real address, 16 hex digits like an unhashed %p."""
        if self.symbol is None:
            return f"0x{self.addr:016x}"
        if self.offset:
            return f"{self.symbol}+{self.offset}"
        return self.symbol

    def canonical(self):
        """The kprobe_events read-back line (trace_kprobe_show())."""
        head = self.kind
        if self.is_return and self.maxactive:
            head += str(self.maxactive)
        parts = [f"{head}:{self.group}/{self.event}", self.probe_point]
        parts += [a.text for a in self.args]
        return " ".join(parts)

    @property
    def entry_arg_count(self):
        """How many entry arguments a return probe needs saved at entry (0 for none)."""
        n = [op[1] + 1 for a in self.args for op in a.code if op[0] == "edata"]
        return max(n, default=0)

    def capture_entry_args(self, ctx):
        """What the kretprobe entry handler saves (store_trace_entry_data()): the values of
        $arg1..$argK at entry, for ctx.entry_args at return."""
        return [kernel_argument(ctx, n, self.thread_size) for n in range(self.entry_arg_count)]

    def resolve(self, symbols):
        """The probed address (symbol + offset, or the address), None if the symbol is
        unknown."""
        if self.symbol is None:
            return self.addr
        base = _lookup_symbol(symbols, self.symbol)
        return None if base is None else base + self.offset

    def error(self, err, index, offset=0, errno=_errno.EINVAL):
        """A ProbeSyntaxError on argv[index] of this command."""
        return ProbeSyntaxError.at(err, self.argv, index, offset, errno)

    def compile(self, symbols):
        """Resolve every `@SYM[+|-off]` (traceprobe_update_arg()); errors are reported as
        registration errors on the probe point.  Returns self."""
        for a in self.args:
            for i, op in enumerate(a.code):
                if op[0] != "symbol":
                    continue
                try:
                    a.code[i + 1] = ("imm", _resolve_symbol_ref_errno(symbols, op[1]))
                except ProbeCommandError as e:
                    raise registration_error(self, e.errno) from None
        self.symbols_resolved = True
        return self

    def fetch_args(self, ctx):
        """Every argument's value at this hit (what Linux stores in the ring buffer)."""
        return [a.fetch(ctx) for a in self.args]

    def format_values(self, values, symbols=None):
        return "".join(f" {a.name}={a.format_value(v, symbols)}"
                       for a, v in zip(self.args, values))

    def print_fmt(self):
        """The event's print_fmt (__set_print_fmt())."""
        if self.is_return:
            fmt, tail = "(%lx <- %lx)", ", REC->__probe_func, REC->__probe_ret_ip"
        else:
            fmt, tail = "(%lx)", ", REC->__probe_ip"
        out = '"' + fmt
        for a in self.args:
            out += f" {a.name}="
            out += "{" + ",".join([a.type.fmt] * a.count) + "}" if a.count else a.type.fmt
        out += '"' + tail
        for a in self.args:
            ref = "__get_str({})" if a.type.is_string else "REC->{}"
            names = [f"{a.name}[{j}]" for j in range(a.count)] if a.count else [a.name]
            out += "".join(", " + ref.format(n) for n in names)
        return out


@dataclass(frozen=True)
class DeleteCommand:
    """`-:[GROUP/]EVENT [PLACE [ARGS...]]`: `event` "" with a group removes the whole group;
    `match_args` narrows the match to probes with that place and leading arguments."""

    group: str
    event: str
    match_args: tuple = ()

    def matches(self, defn):
        """trace_kprobe_match() with trace_kprobe_match_command_head()."""
        if self.event and defn.event != self.event:
            return False
        if self.group is not None and defn.group != self.group:
            return False
        if not self.match_args:
            return True
        if defn.probe_point[:MAX_ARGSTR_LEN] != self.match_args[0]:
            return False
        rest = self.match_args[1:]
        if len(defn.args) < len(rest):
            return False
        return all(a.text[:MAX_ARGSTR_LEN] == w for a, w in zip(defn.args, rest))


def parse_command(text, symbols=None, *, thread_size=THREAD_SIZE):
    """Parse one kprobe_events line.

    Returns a ProbeDefinition for `p`/`r`, a DeleteCommand for `-:`, or None for a line that
    is blank after its comment is removed.  Raises ProbeSyntaxError (with Linux's error_log
    entry) or ProbeCommandError (errno only).  With `symbols` (kallsyms) the probed symbol
    must exist once and `@SYM` arguments are resolved; without it only syntax is checked.
    """
    line = text.split("#", 1)[0]
    argv = _argv_split(line)
    if not argv:
        return None
    if line[0] == "-":
        return _parse_delete(argv)
    return _parse_probe(tuple(argv), symbols, thread_size)


def _parse_delete(argv):
    """dyn_event_release()'s parse: errno only, no error_log."""
    head = argv[0]
    if head[1:2] != ":":
        raise ProbeCommandError(_errno.EINVAL, f"bad delete command {head!r}")
    event = head[2:]
    group = None
    if "/" in event:
        group, event = event.split("/", 1)
    if group is None and event == "":
        raise ProbeCommandError(_errno.EINVAL, "no event to delete")
    return DeleteCommand(group, event, tuple(argv[1:]))


def _parse_probe(argv, symbols, thread_size):
    """trace_kprobe_create_internal(), up to (not including) registration."""

    def fail(err, index, offset=0, errno=_errno.EINVAL):
        raise ProbeSyntaxError.at(err, argv, index, offset, errno)

    head = argv[0]
    if head[0] not in "pr":
        raise ProbeCommandError(_errno.EINVAL, f"unknown probe type {head[0]!r}")
    is_return = head[0] == "r"
    if len(argv) < 2:
        raise ProbeCommandError(_errno.EINVAL, "no probe point")

    colon = head.find(":", 1)
    event_text = head[colon + 1:] if colon >= 0 else None

    # 1. r[MAXACTIVE]
    maxactive = 0
    if _isdigit(head[1:2]):
        if not is_return:
            fail(ErrorCode.BAD_MAXACT_TYPE, 0, 1)
        num = head[1:colon] if colon >= 0 else head[1:]
        if len(num) > MAX_EVENT_NAME_LEN - 1:
            fail(ErrorCode.BAD_MAXACT, 0, 1)
        maxactive = kstrtouint(num, 0)
        if not maxactive:
            fail(ErrorCode.BAD_MAXACT, 0, 1)
        if maxactive > KRETPROBE_MAXACTIVE_MAX:
            fail(ErrorCode.MAXACT_TOO_BIG, 0, 1)

    # 2. the place: an address, else [MOD:]SYM[+OFFS][%return]
    addr = kstrtoul(argv[1], 0)
    symbol, offset = None, 0
    ret_flag = on_entry = False
    if addr is None:
        place = argv[1]
        if "/" in place and ":" in place:
            raise ProbeCommandError(_errno.EINVAL, "a uprobe, not a kprobe")
        symbol = place
        pct = symbol.find("%")
        if pct >= 0:
            if symbol[pct:] != "%return":
                fail(ErrorCode.BAD_ADDR_SUFFIX, 1, pct)
            symbol = symbol[:pct]
            is_return = True
        cut = min((i for i in (symbol.find("+"), symbol.find("-")) if i >= 0), default=-1)
        if cut >= 0:
            offset = kstrtol(symbol[cut:], 0)
            if offset is None:
                fail(ErrorCode.BAD_PROBE_ADDR, 1)
            symbol = symbol[:cut]
        if offset < 0 or offset > _UINT_MAX:
            fail(ErrorCode.BAD_PROBE_ADDR, 1)
        known = True
        if symbols is not None:
            n = _count_symbols(symbols, symbol)
            if n is not None and n > 1:
                fail(ErrorCode.NON_UNIQ_SYMBOL, 1)
            if n == 0:
                fail(ErrorCode.BAD_PROBE_ADDR, 1)
            known = n is not None
        # Linux sets TPARG_FL_RETURN only for symbol probes, so `r ADDR $retval` is refused
        # with RETVAL_ON_PROBE and `$argN` there with NOFENTRY_ARGS; kept as Linux has it.
        ret_flag = is_return
        # kprobe_on_func_entry(): a known symbol at offset 0 (x86 without IBT).
        if known and offset == 0 and not is_return:
            on_entry = True
        if known and offset != 0 and is_return:
            fail(ErrorCode.BAD_RETPROBE, 1)

    # 3. [GROUP/][EVENT]
    group, event = KPROBE_EVENT_SYSTEM, None
    if event_text is not None:
        group, event = _parse_event_name(event_text, colon + 1, group, fail)
    generated = event is None
    if generated:
        if symbol is not None:
            name = f"{'r' if is_return else 'p'}_{symbol}_{offset}"
        else:
            name = f"{'r' if is_return else 'p'}_0x{addr:016x}"
        event = _sanitize_event_name(name[:MAX_EVENT_NAME_LEN - 1])

    # 4. the arguments
    words = argv[2:]
    _check_var_args(words, on_entry or ret_flag, fail)
    if len(words) > MAX_TRACE_ARGS:
        fail(ErrorCode.TOO_MANY_ARGS, 2, 0, _errno.E2BIG)
    args, size = [], 0
    for i, word in enumerate(words):
        try:
            a, size = _parse_arg(word, i, args, ret_flag, on_entry, thread_size, size)
        except LogError as e:
            fail(e.err, i + 2, e.offset, e.errno)
        args.append(a)

    defn = ProbeDefinition(kind="r" if is_return else "p", group=group, event=event,
                           symbol=symbol, offset=offset,
                           addr=addr if symbol is None else None, maxactive=maxactive,
                           args=args, argv=argv, on_func_entry=on_entry,
                           event_generated=generated, thread_size=thread_size)
    if symbols is not None:
        defn.compile(symbols)
    return defn


def _parse_event_name(text, offset, group, fail):
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


def _sanitize_event_name(name):
    """sanitize_event_name(): ':', '.' and '*' after the first character become '_'."""
    return name[:1] + "".join("_" if c in ":.*" else c for c in name[1:])


def _check_var_args(words, entry_or_exit, fail):
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
        if _isdigit(w[4:5]):
            continue
        if w[4:5] != "*":
            fail(ErrorCode.BAD_VAR, last)
        if var_args_at is not None:
            fail(ErrorCode.DOUBLE_ARGS, last)
        var_args_at = i
    if var_args_at is not None:
        fail(ErrorCode.NOSUP_BTFARG, last)


def _parse_arg(word, i, previous, is_return, on_entry, thread_size, size):
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


# -- what the command layer reports in this language ----------------------------------------------

def registration_error(defn, errno):
    """The error a failed registration leaves in error_log, caret on the probe point
    (__trace_kprobe_create after register_trace_kprobe()): EILSEQ is BAD_INSN_BNDRY, ENOENT
    BAD_PROBE_ADDR, anything else but ENOMEM/EEXIST FAIL_REG_PROBE.  ENOMEM and EEXIST log
    nothing here (EEXIST has logged its own reason) and come back as a bare
    ProbeCommandError."""
    err = {_errno.EILSEQ: ErrorCode.BAD_INSN_BNDRY,
           _errno.ENOENT: ErrorCode.BAD_PROBE_ADDR}.get(errno, ErrorCode.FAIL_REG_PROBE)
    if errno in (_errno.ENOMEM, _errno.EEXIST):
        return ProbeCommandError(errno)
    return defn.error(err, 1, 0, errno)


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


def check_append(existing, new):
    """register_trace_kprobe()'s checks when `new` names an event that already has the
    probes `existing` (a multi-probe event): raises DIFF_PROBE_TYPE, DIFF_ARG_TYPE or
    SAME_PROBE as Linux does, else returns.

    Like Linux, an address probe counts as symbol "unknown" at offset 0 in the sameness
    test, so two address probes with the same arguments are "the same probe"."""
    if not existing:
        return
    first = existing[0]
    if new.is_return != first.is_return:
        raise new.error(ErrorCode.DIFF_PROBE_TYPE, 0, 0, _errno.EEXIST)
    diff = compare_arg_type(new, first)
    if diff:
        raise new.error(ErrorCode.DIFF_ARG_TYPE, diff + 1, 0, _errno.EEXIST)
    for old in existing:
        if ((old.symbol or "unknown") != (new.symbol or "unknown")
                or old.offset != new.offset):
            continue
        if all(x.comm == y.comm for x, y in zip(old.args, new.args)):
            raise new.error(ErrorCode.SAME_PROBE, 0, 0, _errno.EEXIST)


def format_args(defn, ctx):
    """The ` name=value ...` tail of a trace line, fetched and printed now."""
    return defn.format_values(defn.fetch_args(ctx), getattr(ctx, "symbols", None))
