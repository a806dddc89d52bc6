"""The pt_regs view handed to handlers: the CPU's registers by Linux's x86_64 pt_regs names,
read lazily and written back when the handler returns.

    regs.ax, regs.rax, regs["ax"]     one register (the 2.6-era r-prefixed names and
                                      `eflags` are aliases of Linux >= 2.6.25's names)
    regs.di = 5                       kept; written to the CPU when the handler returns
    regs.flush()                      write the changed registers now
    regs.refresh()                    flush, and forget what was read (the CPU moved on,
                                      e.g. after a nested m.call)
    regs.as_dict()                    every register, by canonical name

The view is implemented in C (emu/_fastpath.c, part 3), because every kprobe hit builds
two of them: a register is read from Unicorn natively the first time it is asked for and
kept after that (a handler that reads nothing costs nothing), and writes are kept and
written natively at flush() -- or, on the trap path, by trap_return(): it writes the
changed registers other than ip and flags and hands (ip, flags) back for the engine's C
interrupt hook to write.  PtRegs.at_trap(engine, ip, flags) is the view a trap handler
hands out, starting from the ip and flags that hook read.  PtRegs(engine) is a view of
the CPU as it is now.

Writing a name that is not a register raises AttributeError (a typo must not pass
silently); a value must be an integer (TypeError otherwise) and is masked to 64 bits.

Must not import: unicorn, kprobes.
"""

# The one register table is the C view's (emu/_fastpath.c, reg_names[] and reg_aliases[]):
# REG_NAMES are the canonical names (Linux >= 2.6.25 spelling, struct pt_regs order),
# ALIASES maps each 2.6-era r-prefixed spelling to its canonical name.  The rest of kpemu
# takes register names from here.
from emu._fastpath import REG_ALIASES as ALIASES
from emu._fastpath import (X86_EFLAGS_IF, X86_EFLAGS_NT, X86_EFLAGS_RF, X86_EFLAGS_TF,
                           REG_NAMES, PtRegs)

# The EFLAGS bits the host changes are defined once, in emu/kpemu.h (the C trap paths
# need them too), and come from there.
__all__ = ["ALIASES", "REG_NAMES", "PtRegs", "X86_EFLAGS_IF", "X86_EFLAGS_NT", "X86_EFLAGS_RF",
           "X86_EFLAGS_TF"]
