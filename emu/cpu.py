"""The pt_regs view handed to handlers: the CPU's registers by Linux's x86_64 pt_regs names,
read lazily through the engine's fast path and written back when the handler returns.

A register costs one direct ctypes call the first time it is read (a handler that reads
nothing costs nothing); writes are kept until flush(), which the trap path calls when the
handler returns ("writes reach the guest when the handler returns").

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


class PtRegs:
    """Writable view of the CPU registers.  `regs.ax`, `regs.rax`, `regs["ax"]` are one."""

    __slots__ = ("_engine", "_vals", "_dirty")

    def __init__(self, engine, prefetch=()):
        """`prefetch`: a tuple of register names read at once in one crossing (the trap
        path knows it needs ip and flags)."""
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_vals",
                           dict(zip(prefetch, engine.regs(prefetch))) if prefetch else {})
        object.__setattr__(self, "_dirty", set())

    def __getattr__(self, name):
        try:
            canon = _CANON[name]
        except KeyError:
            raise AttributeError(f"pt_regs has no register {name!r}") from None
        vals = self._vals
        value = vals.get(canon)
        if value is None:
            value = vals[canon] = self._engine.reg(canon)
        return value

    def __setattr__(self, name, value):
        try:
            canon = _CANON[name]
        except KeyError:
            raise AttributeError(f"pt_regs has no register {name!r}") from None
        self._vals[canon] = int(value) & _MASK
        self._dirty.add(canon)

    __getitem__ = __getattr__
    __setitem__ = __setattr__

    def flush(self):
        """Write the changed registers to the CPU."""
        dirty = self._dirty
        if dirty:
            names = tuple(sorted(dirty))
            vals = self._vals
            if len(names) == 1:
                self._engine.set_reg(names[0], vals[names[0]])
            else:
                self._engine.set_regs(names, [vals[n] for n in names])
            dirty.clear()

    def refresh(self):
        """Forget cached values (the CPU moved on, e.g. after a nested m.call)."""
        self.flush()
        self._vals.clear()

    def as_dict(self):
        return {name: getattr(self, name) for name in REG_NAMES}

    def __repr__(self):
        return "<pt_regs " + " ".join(f"{n}={getattr(self, n):#x}"
                                      for n in ("ip", "sp", "bp", "ax", "di", "si", "flags")) + ">"
