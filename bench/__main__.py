"""Run every benchmark and print one table: `python -m bench [NAME...]`."""

import sys

from bench import kprobes_speed, kretprobes_speed, linux_boot, machine_speed, snapshot_speed

BENCHES = {"machine": machine_speed.run, "kprobes": kprobes_speed.run,
           "kretprobes": kretprobes_speed.run, "snapshot": snapshot_speed.run,
           "linux": linux_boot.run}


def main(argv):
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"bench: unknown benchmark(s): {', '.join(unknown)}; have {', '.join(BENCHES)}",
              file=sys.stderr)
        return 2
    rows = []
    for name in names:
        rows.extend(BENCHES[name]())
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'value':>14}  unit / note")
    for label, value, unit in rows:
        shown = value if isinstance(value, str) else \
            f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"{label:<{width}}  {shown:>14}  {unit}")
    return 0


sys.exit(main(sys.argv[1:]))
