"""The kprobes layer's errors, under the project's one root (emu.errors.KpemuError).

  KprobesError    the root of this layer (the probe-event language's errors derive from it
                  too, in kprobes/events/errors.py);
  KprobeError     a refused registration, `.errno` what Linux's register_kprobe returns;
  KprobeBug       kprobes found its own state broken (a trap entry point whose
                  precondition does not hold, re-entry it cannot recover from): Linux
                  would BUG() or panic here.

Must not import: unicorn, anything of kprobes.
"""

import errno as _errno

from emu.errors import KpemuError


class KprobesError(KpemuError):
    """Root of every error the kprobes layer raises."""


class KprobeError(KprobesError):
    """A refused registration; `.errno` is what Linux returns for the same case."""

    def __init__(self, errno, message):
        super().__init__(f"{message} ({_errno.errorcode.get(errno, errno)})")
        self.errno = errno


class KprobeBug(KprobesError):
    """kprobes' own state is not what the code running now requires."""
