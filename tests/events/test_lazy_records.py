"""A hit records raw values; a record is formatted only when it is read, and only in the
form asked for (text for the trace, typed values for JSON and the plugin) -- as Linux's
trace output formats at read time."""

from kprobes.events import trace_output
from kprobes.events.trace_probe import print_probe_args


def test_records_are_formatted_only_when_read_and_only_as_asked(ev, monkeypatch):
    m, _k, events = ev
    calls = {"text": 0, "json": 0}

    def counting_print(*args):
        calls["text"] += 1
        return print_probe_args(*args)

    monkeypatch.setattr(trace_output, "print_probe_args", counting_print)
    events.write("p:lazy fib n=%di:s64 where=+0(%sp):symbol")
    events.enable()
    arg = events.events["kprobes/lazy"].probes[0].defn.args[0]
    json_value = type(arg).json_value

    def counting_json(self, value, symbols=None):
        calls["json"] += 1
        return json_value(self, value, symbols)

    monkeypatch.setattr(type(arg), "json_value", counting_json)
    assert m.call("fib", 5) == 5
    records = list(events.buffer)
    assert len(records) == 15 and calls == {"text": 0, "json": 0}     # fib(5): 15 calls
    assert records[0].raw[0] == 5
    lines = events.trace_lines()
    assert calls == {"text": 15, "json": 0}     # the text formats each record once
    # the outermost call returns to m.call's landing pad; the last one to fib itself
    assert lines[0].endswith(" lazy: (fib+0x0/0x30) n=5 where=__module_area_start+0x0/0x1000000")
    assert lines[-1].endswith(" lazy: (fib+0x0/0x30) n=1 where=fib+0x24/0x30")
    calls.update(text=0)
    assert records[-1].as_json()["args"] == {"n": 1, "where": "fib+0x24/0x30"}
    assert calls == {"text": 0, "json": 2}      # JSON types each argument, prints nothing
