"""`kpemu demo [NAME]`: list the demos, or record one and show it.

    kpemu demo                     every demo with its one question
    kpemu demo NAME                the narration (colour on a terminal; --no-color: marks only)
    kpemu demo NAME --step         the interactive stepper
    kpemu demo NAME --json         the lesson trace as JSON Lines

Exit status: 0 when every claim of the demo holds, 1 when one does not (the narration is
printed first, then the claims that failed), 2 for a bad name or option.
"""

import sys

from kprobes.demos.catalogue import DEMOS, run
from kprobes.demos.lesson import LessonError
from kprobes.demos.render import render_lesson
from kprobes.demos.stepper import Stepper

EXIT_CLAIM_FAILED = 1


def add_arguments(parser):
    parser.add_argument("name", nargs="?", default=None, metavar="NAME",
                        help="the demo to run (none: list them)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--step", action="store_true",
                      help="step through the lesson interactively (keys: ? for help)")
    form.add_argument("--json", action="store_true",
                      help="write the lesson trace as JSON Lines")
    parser.add_argument("--no-color", action="store_true",
                        help="no colour: the same text with its marker characters only")


def listing():
    width = max(len(name) for name in DEMOS)
    lines = [f"{name:<{width}}  [{demo.tier}] {demo.question}" for name, demo in DEMOS.items()]
    return "\n".join(lines) + "\n"


def cmd_demo(args, out, err):
    if args.name is None:
        if args.step or args.json:
            raise LessonError("--step and --json need a demo NAME (kpemu demo lists them)")
        out.write(listing())
        return 0
    if args.step and not sys.stdin.isatty():
        raise LessonError("--step needs a terminal to read keys from (stdin is not one); "
                          "without --step the whole narration is printed")
    lesson = run(args.name)
    if args.json:
        out.write(lesson.to_json_lines())
    elif args.step:
        Stepper(lesson, color=not args.no_color).loop()
    else:
        color = not args.no_color and getattr(out, "isatty", lambda: False)()
        out.write(render_lesson(lesson, color=color))
    failed = lesson.failed_claims()
    if failed:
        for claim in failed:
            err.write(f"kpemu: demo {lesson.name}: claim does not hold: {claim['text']} "
                      f"({claim['detail']})\n")
        return EXIT_CLAIM_FAILED
    return 0
