"""The pt_regs view handed to handlers: the CPU's registers by Linux's x86_64 pt_regs names,
read lazily through the engine's fast path and written back when the handler returns.

A register costs one direct ctypes call the first time it is read (a handler that reads
nothing costs nothing); after that it is a plain attribute.  Writes are kept until the
handler returns ("writes reach the guest when the handler returns"): flush() writes them
all in one crossing; on the trap path at_trap() starts from the ip and flags the engine's
C interrupt hook passed in, and trap_return() flushes the others and hands ip and flags
back for that hook to write natively.

Must not import: unicorn, kprobes.
"""

# Canonical names (Linux >= 2.6.25 spelling) and the 2.6-era r-prefixed aliases.
REG_NAMES = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx",
             "dx", "si", "di", "ip", "cs", "flags", "sp", "ss")
ALIASES = {"rax": "ax", "rbx": "bx", "rcx": "cx", "rdx": "dx", "rsi": "si", "rdi": "di",
           "rbp": "bp", "rsp": "sp", "rip": "ip", "eflags": "flags"}
_CANON = {n: n for n in REG_NAMES}
_CANON.update(ALIASES)
_MASK = (1 << 64) - 1
_new = object.__new__


class PtRegs:
    """Writable view of the CPU registers.  `regs.ax`, `regs.rax`, `regs["ax"]` are one.

    Registers read so far live in the instance dict under their canonical names, so a
    second read is an ordinary attribute lookup; `_engine` and `_dirty` (the names
    written, created by the first write: most views are never written) are the only
    other entries."""

    def __init__(self, engine):
        self.__dict__["_engine"] = engine

    @classmethod
    def at_trap(cls, engine, ip, flags):
        """The view a trap handler hands out: ip and flags as the interrupt hook read
        them (spelled out: this runs on every kprobe hit)."""
        regs = _new(cls)
        d = regs.__dict__
        d["_engine"] = engine
        d["ip"] = ip
        d["flags"] = flags
        return regs

    def trap_return(self):
        """Write the changed registers other than ip and flags (rare: one crossing), and
        return (ip, flags) -- what a trap handler returns for the engine's C interrupt
        hook to write."""
        d = self.__dict__
        dirty = d.get("_dirty")
        if dirty:
            dirty.discard("ip")
            dirty.discard("flags")
            if dirty:
                self.flush()
        return d["ip"], d["flags"]

    def __getattr__(self, name):
        # Only called for names not cached yet.
        try:
            canon = _CANON[name]
        except KeyError:
            raise AttributeError(f"pt_regs has no register {name!r}") from None
        d = self.__dict__
        if canon in d:
            return d[canon]
        value = d[canon] = d["_engine"].reg(canon)
        return value

    def __setattr__(self, name, value):
        try:
            canon = _CANON[name]
        except KeyError:
            raise AttributeError(f"pt_regs has no register {name!r}") from None
        d = self.__dict__
        d[canon] = int(value) & _MASK
        dirty = d.get("_dirty")
        if dirty is None:
            d["_dirty"] = {canon}
        else:
            dirty.add(canon)

    def __getitem__(self, name):
        return getattr(self, name)

    def __setitem__(self, name, value):
        setattr(self, name, value)

    def flush(self):
        """Write the changed registers to the CPU."""
        d = self.__dict__
        dirty = d.get("_dirty")
        if dirty:
            names = tuple(sorted(dirty))
            if len(names) == 1:
                d["_engine"].set_reg(names[0], d[names[0]])
            else:
                d["_engine"].set_regs(names, [d[n] for n in names])
            dirty.clear()

    def refresh(self):
        """Forget cached values (the CPU moved on, e.g. after a nested m.call)."""
        self.flush()
        d = self.__dict__
        for name in REG_NAMES:
            d.pop(name, None)

    def as_dict(self):
        return {name: getattr(self, name) for name in REG_NAMES}

    def __repr__(self):
        return "<pt_regs " + " ".join(f"{n}={getattr(self, n):#x}"
                                      for n in ("ip", "sp", "bp", "ax", "di", "si", "flags")) + ">"
