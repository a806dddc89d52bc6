"""The probe-event error catalogue and the caret of an error_log entry.

This module owns:
  * ErrorCode, Linux's ERRORS table of kernel/trace/trace_probe.h (the TP_ERR_ codes and
    their texts);
  * the errors a kprobe_events write raises: ProbeCommandError (an errno only) and
    ProbeSyntaxError (an error_log entry, with the caret placed the way
    __trace_probe_log_err() in trace_probe.c places it);
  * LogError, what the argument parser raises before the caller knows which word of the
    command it was parsing (Linux's trace_probe_log index).

Every other events module imports from here; this one imports nothing of kpemu's.
Must not import: unicorn, emu, kprobes beyond the layer's error root (kprobes.KprobesError).
"""

import errno as _errno
from enum import Enum

from kprobes import KprobesError

# The second line of an error_log entry starts with this.
CMD_PREFIX = "  Command: "


class ErrorCode(Enum):
    """Linux's probe-event errors: the member name is the TP_ERR_ code, the value its text.

    Only the entries a BTF-less x86_64 kprobe event can reach are listed (no file, uprobe,
    eprobe, fprobe, tracepoint or BTF-type entries).  The texts are Linux's, typos included.
    """

    BAD_MAXACT_TYPE = "Maxactive is only for function exit"
    BAD_MAXACT = "Invalid maxactive number"
    MAXACT_TOO_BIG = "Maxactive is too big"
    BAD_PROBE_ADDR = "Invalid probed address or symbol"
    NON_UNIQ_SYMBOL = "The symbol is not unique"
    BAD_RETPROBE = "Retprobe address must be an function entry"
    BAD_ADDR_SUFFIX = "Invalid probed address suffix"
    NO_GROUP_NAME = "Group name is not specified"
    GROUP_TOO_LONG = "Group name is too long"
    BAD_GROUP_NAME = "Group name must follow the same rules as C identifiers"
    NO_EVENT_NAME = "Event name is not specified"
    EVENT_TOO_LONG = "Event name is too long"
    BAD_EVENT_NAME = "Event name must follow the same rules as C identifiers"
    EVENT_EXIST = "Given group/event name is already used by another event"
    RETVAL_ON_PROBE = "$retval is not available on probe"
    BAD_STACK_NUM = "Invalid stack number"
    BAD_ARG_NUM = "Invalid argument number"
    BAD_VAR = "Invalid $-valiable specified"
    BAD_REG_NAME = "Invalid register name"
    BAD_MEM_ADDR = "Invalid memory address"
    BAD_IMM = "Invalid immediate value"
    IMMSTR_NO_CLOSE = "String is not closed with '\"'"
    FILE_ON_KPROBE = "File offset is not available with kprobe"
    TOO_MANY_OPS = "Dereference is too much nested"
    DEREF_NEED_BRACE = "Dereference needs a brace"
    BAD_DEREF_OFFS = "Invalid dereference offset"
    DEREF_OPEN_BRACE = "Dereference brace is not closed"
    COMM_CANT_DEREF = "$comm can not be dereferenced"
    BAD_FETCH_ARG = "Invalid fetch argument"
    ARRAY_NO_CLOSE = "Array is not closed"
    BAD_ARRAY_SUFFIX = "Array has wrong suffix"
    BAD_ARRAY_NUM = "Invalid array size"
    ARRAY_TOO_BIG = "Array number is too big"
    BAD_TYPE = "Unknown type is specified"
    BAD_STRING = "String accepts only memory argument"
    BAD_SYMSTRING = "Symbol String doesn't accept data/userdata"
    BAD_BITFIELD = "Invalid bitfield"
    ARG_NAME_TOO_LONG = "Argument name is too long"
    NO_ARG_NAME = "Argument name is not specified"
    BAD_ARG_NAME = "Argument name must follow the same rules as C identifiers"
    USED_ARG_NAME = "This argument name is already used"
    ARG_TOO_LONG = "Argument expression is too long"
    NO_ARG_BODY = "No argument expression"
    BAD_INSN_BNDRY = "Probe point is not an instruction boundary"
    FAIL_REG_PROBE = "Failed to register probe event"
    DIFF_PROBE_TYPE = "Probe type is different from existing probe"
    DIFF_ARG_TYPE = "Argument type or name is different from existing probe"
    SAME_PROBE = "There is already the exact same probe event"
    NOSUP_BTFARG = "BTF is not available or not supported"
    NOFENTRY_ARGS = "$arg* can be used only on function entry or exit"
    DOUBLE_ARGS = "$arg* can be used only once in the parameters"
    NEED_STRING_TYPE = "$comm and immediate-string only accepts string type"
    TOO_MANY_ARGS = "Too many arguments are specified"
    EVENT_TOO_BIG = "Event too big (too many fields?)"

    @property
    def code(self):
        return self.name

    @property
    def message(self):
        return self.value


class ProbeCommandError(KprobesError):
    """A kprobe_events write that fails; `.errno` is what the write returns in Linux.

    Used bare for failures Linux reports with an errno only (an unknown command letter, a
    line with no probe point, a malformed `-:` line); ProbeSyntaxError adds the error_log
    entry.  `.reason` is kpemu's word on why, where Linux's log says only that it failed
    (the registration's own message: blacklisted, not text...), or None.
    """

    reason = None

    def __init__(self, errno, message=None):
        super().__init__(message or _errno.errorcode.get(errno, str(errno)))
        self.errno = errno


class ProbeSyntaxError(ProbeCommandError):
    """A probe-event error with its error_log entry: `.err` (an ErrorCode), `.code`,
    `.message`, `.command` (the argv joined by single spaces, as Linux rebuilds it) and
    `.pos` (the caret's offset in `.command`)."""

    def __init__(self, err, command, pos, errno=_errno.EINVAL):
        self.err = err
        self.command = command
        self.pos = pos
        super().__init__(errno, err.value)

    @property
    def code(self):
        return self.err.name

    @property
    def message(self):
        return self.err.value

    @staticmethod
    def position(argv, index, offset):
        """The caret offset for `offset` inside argv[index], like __trace_probe_log_err().

        An index past the last word puts the caret one column past the end of the
        command (Linux counts the terminating NUL as the separator of a missing word)."""
        if index >= len(argv):
            return sum(len(a) + 1 for a in argv)
        return sum(len(a) + 1 for a in argv[:index]) + offset

    @classmethod
    def at(cls, err, argv, index, offset=0, errno=_errno.EINVAL):
        return cls(err, " ".join(argv), cls.position(argv, index, offset), errno)

    def caret_command(self):
        """The command with `^` inserted at the caret, the way the selftests write it."""
        cmd = self.command.ljust(self.pos)
        return cmd[:self.pos] + "^" + cmd[self.pos:]

    def format(self, subsystem="trace_kprobe", timestamp_ns=None):
        """The error_log entry: three lines, the caret under the offending character.

        Linux prefixes the first line with `[%5llu.%06u] `; it is printed only when a
        timestamp (in ns) is given."""
        head = f"{subsystem}: error: {self.err.value}"
        if timestamp_ns is not None:
            sec, nsec = divmod(timestamp_ns, 1_000_000_000)
            head = f"[{sec:5d}.{nsec // 1000:06d}] {head}"
        return f"{head}\n{CMD_PREFIX}{self.command}\n{' ' * (len(CMD_PREFIX) + self.pos)}^"


class LogError(Exception):
    """Internal to the parser (never escapes it, so not under the error root): an error at `offset` inside one word of the command, raised while that word is
    parsed; the caller knows which word it is and makes a ProbeSyntaxError of it (the
    index half of Linux's trace_probe_log)."""

    def __init__(self, err, offset, errno=_errno.EINVAL):
        super().__init__(err.name)
        self.err = err
        self.offset = offset
        self.errno = errno
