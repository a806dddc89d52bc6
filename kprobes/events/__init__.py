"""The kprobe_events language, in Linux's files:

  errors        the error catalogue (trace_probe.h's ERRORS) and the error_log caret
  trace_probe   the fetch arguments and types every probe kind shares (trace_probe.c)
  trace_output  the text of a trace line (trace_output.c)
  trace_kprobe  the kprobe command, its registration and the events (trace_kprobe.c)

Each imports only the ones above it in this list.  Code outside the package imports from
here, not from the modules.

Imports point one way: kprobes.events -> kprobes, emu; never unicorn.
"""

from kprobes.events.errors import ErrorCode, ProbeCommandError, ProbeSyntaxError
from kprobes.events.trace_kprobe import (
    DeleteCommand,
    KprobeEvents,
    ProbeDefinition,
    TraceEvent,
    TraceKprobe,
    check_append,
    parse_command,
    registration_error,
    split_commands,
)
from kprobes.events.trace_output import (
    TraceRecord,
    format_probe_ip,
    format_retprobe_ip,
    format_trace_line,
    irq_flags,
)
from kprobes.events.trace_probe import (
    FAULT,
    FETCH_TYPES,
    FetchArg,
    FetchType,
    compare_arg_type,
    format_args,
)

__all__ = ["KprobeEvents", "TraceEvent", "TraceKprobe", "TraceRecord",
    "FAULT", "FETCH_TYPES", "DeleteCommand", "ErrorCode", "FetchArg", "FetchType",
    "ProbeCommandError", "ProbeDefinition", "ProbeSyntaxError", "check_append",
    "compare_arg_type", "format_args", "format_probe_ip", "format_retprobe_ip",
    "format_trace_line", "irq_flags", "parse_command", "registration_error",
    "split_commands",
]
