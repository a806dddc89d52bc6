"""`kpemu demo [NAME]`: list the demos, or record one and show it.

    kpemu demo                     every demo with its one question
    kpemu demo NAME                the narration (colour on a terminal; --no-color: marks only)
    kpemu demo NAME --step         the interactive stepper
    kpemu demo NAME --json         the lesson trace as JSON Lines
    kpemu demo NAME --html FILE    the lesson page: one self-contained HTML file
    kpemu demo --html-dir DIR      every demo's page, and DIR/index.html
    kpemu demo NAME --svg DIR      one SVG a step and NAME-storyboard.svg, for slides
                                   (--no-color: in one ink, the marks only)

The page and the slides are made from the lesson trace alone (the JSON Lines --json
writes, read back), never from the recording's Python objects.

Exit status: 0 when every claim of the demo holds, 1 when one does not (the narration is
printed first, then the claims that failed; a page or slides are still written, showing
the failed claims), 2 for a bad name or option, or a file that cannot be written.
"""

import sys

from kprobes.demos.catalogue import CONFUSIONS, DEMOS, run
from kprobes.demos.lesson import LessonError
from kprobes.demos.page import (PAGE_BUDGET, index_page, lesson_page, output_dir, read_trace,
                                trap_counts, write_file)
from kprobes.demos.render import render_lesson
from kprobes.demos.slides import write_slides
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
    form.add_argument("--html", metavar="FILE", default=None,
                      help="write the lesson as one self-contained HTML page")
    form.add_argument("--html-dir", metavar="DIR", default=None,
                      help="write every demo's page and an index.html into DIR (no NAME)")
    form.add_argument("--svg", metavar="DIR", default=None,
                      help="write one SVG a step and a storyboard of the key frames into DIR")
    parser.add_argument("--no-color", action="store_true",
                        help="no colour: the same text with its marker characters only")


def listing():
    width = max(len(name) for name in DEMOS)
    lines = [f"{name:<{width}}  [{demo.tier}] {demo.question}" for name, demo in DEMOS.items()]
    return "\n".join(lines) + "\n"


def trace_of(lesson):
    """(head, steps): the lesson as its JSON Lines trace reads back."""
    return read_trace(lesson.to_json_lines())


def _budget(path, size, err):
    if size > PAGE_BUDGET:
        err.write(f"kpemu: {path}: {size:,} bytes, over the {PAGE_BUDGET:,}-byte budget of "
                  "a lesson page\n")


def write_page(lesson, path, err):
    """Write `lesson`'s page to `path`; returns (bytes, head, steps)."""
    head, steps = trace_of(lesson)
    size = write_file(path, lesson_page(head, steps, lesson.demo.prose, lesson.demo.after))
    _budget(path, size, err)
    return size, head, steps


def write_pages(directory, out, err):
    """Every demo's page into `directory`, and index.html; the lessons recorded."""
    root = output_dir(directory, "pages")
    entries = []
    lessons = []
    for name, demo in DEMOS.items():
        lesson = run(name)
        lessons.append(lesson)
        file = f"{name}.html"
        size, head, steps = write_page(lesson, root / file, err)
        entries.append({"name": name, "question": demo.question, "tier": demo.tier,
                        "confusions": demo.confusions,
                        "confusion_texts": {c: CONFUSIONS[c] for c in demo.confusions},
                        "file": file, "steps": len(steps), "traps": trap_counts(steps),
                        "claims_ok": not lesson.failed_claims(),
                        "claims": len(lesson.claims), "bytes": size})
        out.write(f"wrote {root / file}: {len(steps)} steps, {size:,} bytes\n")
    write_file(root / "index.html", index_page(entries))
    out.write(f"wrote {root / 'index.html'}: {len(entries)} "
              f"demo{'s' if len(entries) != 1 else ''}\n")
    return lessons


def _report(lessons, err):
    status = 0
    for lesson in lessons:
        for claim in lesson.failed_claims():
            err.write(f"kpemu: demo {lesson.name}: claim does not hold: {claim['text']} "
                      f"({claim['detail']})\n")
            status = EXIT_CLAIM_FAILED
    return status


def cmd_demo(args, out, err):
    if args.name is None:
        if args.html_dir is not None:
            return _report(write_pages(args.html_dir, out, err), err)
        if args.step or args.json or args.html is not None or args.svg is not None:
            raise LessonError("--step, --json, --html and --svg need a demo NAME "
                              "(kpemu demo lists them)")
        out.write(listing())
        return 0
    if args.html_dir is not None:
        raise LessonError("--html-dir writes every demo: give it no NAME "
                          "(--html FILE writes one demo's page)")
    if args.step and not sys.stdin.isatty():
        raise LessonError("--step needs a terminal to read keys from (stdin is not one); "
                          "without --step the whole narration is printed")
    lesson = run(args.name)
    if args.json:
        out.write(lesson.to_json_lines())
    elif args.html is not None:
        size, _head, steps = write_page(lesson, args.html, err)
        out.write(f"wrote {args.html}: {len(steps)} steps, {size:,} bytes\n")
    elif args.svg is not None:
        _head, steps = trace_of(lesson)
        written = write_slides(lesson.name, steps, args.svg, color=not args.no_color)
        out.write(f"wrote {len(written)} SVGs into {args.svg}: {len(steps)} steps and "
                  f"{written[-1].name}\n")
    elif args.step:
        Stepper(lesson, color=not args.no_color).loop()
    else:
        color = not args.no_color and getattr(out, "isatty", lambda: False)()
        out.write(render_lesson(lesson, color=color))
    return _report([lesson], err)
