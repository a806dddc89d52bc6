"""Fault reports and frame-pointer unwinding.

An Oops is what the machine hands back when the guest faults (or a run is cut off): the
vector, a message, the registers at the fault, a symbolized backtrace, the task and the tail
of the console -- the pieces of a Linux oops.  Unwinding follows frame pointers (the image is
built with them) within the current task's stack; `resolvers` may map a return address that
is not the real one (a kretprobe trampoline) back to the real caller.

Must not import: unicorn, kprobes.
"""

from dataclasses import dataclass, field

# The order of an oops's register dump (Linux's __show_regs()): the names of emu.cpu's
# REG_NAMES but the segment registers; tests/unit/test_ptregs.py holds it to that table.
REG_ORDER = ("ip", "sp", "flags", "ax", "bx", "cx", "dx", "si", "di", "bp",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def _reg_label(name):
    """RIP, RSP, RFLAGS, RAX..., R8..R15: Linux's register dump names."""
    if name == "flags":
        return "RFLAGS"
    return name.upper() if name.startswith("r") else "R" + name.upper()


@dataclass
class Oops:
    vector: int
    message: str
    regs: dict
    backtrace: list                 # formatted frames, innermost first
    task: str = "?"
    console_tail: str = ""
    insns: int = 0
    extra: dict = field(default_factory=dict)

    def summary(self):
        return self.message

    def format(self):
        r = self.regs
        lines = [f"kpemu: Oops: {self.message}",
                 f"CPU: 0 PID/comm: {self.task}  clock: {self.insns} insns",
                 f"RIP: {self.extra.get('ip_sym', hex(r.get('ip', 0)))}"]
        names = [n for n in REG_ORDER if n in r]
        for i in range(0, len(names), 3):
            lines.append("  ".join(f"{_reg_label(n):<6}: {r[n]:016x}"
                                   for n in names[i:i + 3]))
        lines.append("Call Trace:")
        lines.extend(f" {frame}" for frame in self.backtrace)
        if self.console_tail:
            lines.append("Console (last lines):")
            lines.extend(f" | {ln}" for ln in self.console_tail.splitlines())
        return "\n".join(lines)

    def __str__(self):
        return self.format()


def unwind(read_u64, is_text, ip, sp, bp, bounds, first_bytes=None, resolvers=(),
           stop_at=frozenset(), max_frames=64):
    """Return addresses, innermost first, starting with `ip`.

    `read_u64(addr)` reads guest memory (raising on a fault), `is_text(addr)` says whether
    an address is kernel or module text, `bounds` = (low, high) of the stack,
    `first_bytes(ip)` -> (offset into its function, opcode byte at ip, whether the function
    starts with `push %rbp`) lets the walk see where the frame-pointer chain does not name
    the caller yet: at a function's first instruction, right after `push %rbp`, on a `ret`,
    or anywhere in a leaf function compiled without a frame (gcc gives a function that
    needs no stack no frame, whatever -fno-omit-frame-pointer says) -- there the return
    address is at [sp] (or [sp+8] after the push).
    Each resolver(ret_addr, slot_addr) may replace a return address read from slot_addr
    (slot_addr None: the ip itself).
    A return address in `stop_at` (the host's m.call landing pad) ends the walk: what is
    below it on the stack belongs to the code the host call interrupted.
    """
    low, high = bounds

    def resolve(ret, slot):
        for r in resolvers:
            ret = r(ret, slot)
        return ret

    ip = resolve(ip, None)          # a trap ip inside a trampoline names the caller
    trace = [ip]
    if ip in stop_at:
        return trace
    if first_bytes is not None:
        where = first_bytes(ip)
        slot = None
        if where is not None:
            offset, opcode, framed = where
            if offset == 0 or opcode == 0xC3 or not framed:
                slot = sp
            elif offset == 1:
                slot = sp + 8
        if slot is not None and low <= slot < high:
            try:
                ret = resolve(read_u64(slot), slot)
            except Exception:   # noqa: BLE001 - an unreadable stack ends the walk
                return trace
            if ret in stop_at:
                return trace
            if is_text(ret):
                trace.append(ret)
    frame = bp
    while len(trace) < max_frames and low <= frame and frame + 16 <= high and not frame & 7:
        try:
            nxt = read_u64(frame)
            ret = resolve(read_u64(frame + 8), frame + 8)
        except Exception:       # noqa: BLE001
            break
        if ret in stop_at or not is_text(ret):
            break
        trace.append(ret)
        if nxt <= frame:
            break
        frame = nxt
    return trace
