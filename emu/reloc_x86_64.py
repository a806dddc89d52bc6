"""x86_64 relocation recipes for loading kernel modules, kept as data keyed by R_X86_64_* number.

Each recipe says what a relocation type writes at the place P: how many bytes, which formula
(S + A or S + A - P, in the psABI's letters), and which values the field can hold.  Unlike
pyelftools, a value that does not fit is an error and the load fails with ENOEXEC, as Linux's
apply_relocate_add() does; nothing is silently truncated.  Any type without a recipe (GOT and
PLT forms that only -fpic code emits, TLS, ...) fails the load the same way.

Must not import: unicorn, kprobes.
"""

import errno
from dataclasses import dataclass

from elftools.elf.enums import ENUM_RELOC_TYPE_x64

from emu.errors import ModuleLoadError

_MASK64 = (1 << 64) - 1
_S32 = (-(1 << 31), (1 << 31) - 1)
_U32 = (0, (1 << 32) - 1)


def _sym_plus_addend(S, A, P):
    return S + A


def _pc_relative(S, A, P):
    return S + A - P


def _nothing(S, A, P):
    return 0


@dataclass(frozen=True)
class Recipe:
    name: str
    size: int          # bytes written at P
    calc: object       # (S, A, P) -> value, computed in 64 bits like the kernel's u64 val
    fits: tuple        # (lo, hi) the field can hold; None when every 64-bit value fits


RECIPES = {
    0: Recipe("R_X86_64_NONE", 0, _nothing, None),
    1: Recipe("R_X86_64_64", 8, _sym_plus_addend, None),
    2: Recipe("R_X86_64_PC32", 4, _pc_relative, _S32),
    # A module has no PLT: the callee is within +-2 GiB (module_alloc() guarantees it), so a
    # PLT32 call is resolved straight to the symbol, exactly like PC32 (Linux does the same).
    4: Recipe("R_X86_64_PLT32", 4, _pc_relative, _S32),
    # The 32-bit field zero-extends: only addresses below 4 GiB fit, never a kernel address.
    10: Recipe("R_X86_64_32", 4, _sym_plus_addend, _U32),
    # Sign-extends: what -mcmodel=kernel emits for absolute addresses in the top 2 GiB.
    11: Recipe("R_X86_64_32S", 4, _sym_plus_addend, _S32),
    24: Recipe("R_X86_64_PC64", 8, _pc_relative, None),
}

_NAMES = {number: name for name, number in ENUM_RELOC_TYPE_x64.items() if name != "_default_"}


def type_name(rtype):
    """R_X86_64_* name of a relocation type number, supported or not."""
    return _NAMES.get(rtype, f"type {rtype}")


def apply(rtype, S, A, P):
    """Bytes to write at P for a relocation of type `rtype` (little-endian, the recipe's width).

    S is the symbol's final address, A the addend, P the place's address.  Raises
    ModuleLoadError(ENOEXEC) for a type without a recipe or a value the field cannot hold,
    with Linux's wording ("Unknown rela relocation: N", "overflow in relocation type N val X").
    """
    recipe = RECIPES.get(rtype)
    if recipe is None:
        raise ModuleLoadError(f"Unknown rela relocation: {rtype} ({type_name(rtype)})",
                              errno.ENOEXEC)
    val = recipe.calc(S, A, P) & _MASK64
    if recipe.fits is not None:
        lo, hi = recipe.fits
        # A signed field is checked against the value read as s64, an unsigned one as u64,
        # the way the kernel compares (s64)val / val with the truncated field.
        seen = val - (1 << 64) if lo < 0 and val >> 63 else val
        if not lo <= seen <= hi:
            raise ModuleLoadError(f"overflow in relocation type {rtype} ({recipe.name}) "
                                  f"val {val:#x}", errno.ENOEXEC)
    return (val & ((1 << (8 * recipe.size)) - 1)).to_bytes(recipe.size, "little")
