"""The emu layer's one error root and its kinds.

The root of the whole project, KpemuError, lives here too: the layers above import emu,
never the other way round, so this is the one place every layer can derive from.

Foreign errors (UcError, ELFError, OSError from opening an image) are wrapped here, at the
boundary, so callers catch EmuError and never a library's exception.

Must not import: unicorn, kprobes.
"""

import errno as _errno


class KpemuError(Exception):
    """The project's one error root: every error kpemu raises on purpose (the machine's,
    kprobes', the probe-event language's) derives from it, so `except KpemuError` catches
    all of them and nothing else."""


class EmuError(KpemuError):
    """Root of every error the machine layer raises."""


class ImageError(EmuError):
    """A kernel image that cannot be booted: missing, not ELF, wrong machine, truncated."""


class ModuleLoadError(EmuError):
    """A module that cannot be loaded; `.errno` is what Linux's load_module returns."""

    def __init__(self, message, errno=_errno.ENOEXEC):
        super().__init__(message)
        self.errno = errno


class MachineError(EmuError):
    """The machine was used wrongly (e.g. run before boot) or cannot go on."""


class MemoryFault(EmuError):
    """A host access to guest virtual memory that the guest's page tables do not map."""

    def __init__(self, addr, access="read"):
        super().__init__(f"cannot {access} guest memory at {addr:#x}: not mapped")
        self.addr = addr
        self.access = access


class GuestFault(EmuError):
    """The guest faulted (or ran past a limit) inside m.call(); `.oops` is the report."""

    def __init__(self, oops):
        super().__init__(oops.summary())
        self.oops = oops
