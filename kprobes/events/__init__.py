"""The kprobe_events language: the shared fetch-argument layer (trace_probe) and, beside it,
the kprobe command layer (trace_kprobe).

Imports point one way: kprobes.events -> emu; never unicorn.
"""

from .errors import ErrorCode, ProbeCommandError, ProbeSyntaxError
from .trace_probe import (
    FAULT,
    FETCH_TYPES,
    DeleteCommand,
    FetchArg,
    FetchType,
    ProbeDefinition,
    check_append,
    compare_arg_type,
    format_args,
    parse_command,
    registration_error,
    split_commands,
)

from .trace_output import (
    TraceRecord,
    format_probe_ip,
    format_retprobe_ip,
    format_trace_line,
    irq_flags,
)

from .trace_kprobe import KprobeEvents, TraceEvent, TraceKprobe  # noqa: E402

__all__ = ["KprobeEvents", "TraceEvent", "TraceKprobe", "TraceRecord",
    "FAULT", "FETCH_TYPES", "DeleteCommand", "ErrorCode", "FetchArg", "FetchType",
    "ProbeCommandError", "ProbeDefinition", "ProbeSyntaxError", "check_append",
    "compare_arg_type", "format_args", "format_probe_ip", "format_retprobe_ip",
    "format_trace_line", "irq_flags", "parse_command", "registration_error",
    "split_commands",
]
