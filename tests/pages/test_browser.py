"""Every lesson page in a real browser: Debian's chromium driven by Playwright (no browser
download: it fails on these machines).  For each demo of the catalogue, and the synthetic
two-design lesson: nothing but the file is requested and the console stays free of errors;
the keys (§4.3's: arrows, Shift+arrows, n p N P j k g w d Home End) and the buttons step
through the lesson and the step counter, the address bar's
#s=N, and the REGS, STACK and KPROBES panels are those of the trace's step (KPROBES
exactly as render.py draws it); #s=N opens on step N;
hovering a byte lights the instruction in CODE and SLOT; clicking a register marks on
the timeline every step that wrote it and w jumps to the last; the print stylesheet lays
out the storyboard; with two designs, every phase one design lacks is hatched.  A
screenshot of each page is saved for review under build/test-artifacts/pages/ (or
$KPEMU_ARTIFACTS).

One browser a test session (an xdist worker) serves every page.  Skipped, with the reason,
when playwright or chromium cannot be had (`make test` installs both when it can).
"""

import os
import shutil
from pathlib import Path

import pytest

from emu.cpu import REG_NAMES
from kprobes.demos.lesson import DESIGN_LETTERS
from kprobes.demos.page import designs_of, kprobes_lines, lesson_page, lockstep_rows
from tests.pages.conftest import LESSONS

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("KPEMU_ARTIFACTS", ROOT / "build" / "test-artifacts" / "pages"))
CHROMIUM = os.environ.get("KPEMU_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ALWAYS = ("ip", "sp", "flags")
LINK_STEP = 17                     # teaching-demos.md T7: #s=17 restores step 17


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (the test extra has it: "
        "pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {CHROMIUM} (make test installs Debian's chromium when "
                    "run as root with apt-get; KPEMU_CHROMIUM names another)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        # One context for every page: a new one costs more than the page.  Every request
        # that is not for a file is aborted (and counted by Visit).
        context = b.new_context(viewport={"width": 1400, "height": 1000})
        context.route("**/*", lambda route: route.continue_()
                      if route.request.url.startswith("file://") else route.abort())
        yield context
        context.close()
        b.close()


@pytest.fixture(scope="module")
def page_file(trace, tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")

    def get(name):
        t = trace(name)
        path = root / f"{name}.html"
        if not path.exists():
            path.write_text(lesson_page(t.head, t.steps, t.prose, t.after), "utf-8")
        return path

    return get


class Visit:
    """A page opened in a new tab, every request and console error counted."""

    def __init__(self, browser, path, fragment=""):
        self.requests = []
        self.errors = []
        self.page = browser.new_page()
        self.page.on("request", self._request)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.as_uri() + fragment)

    def _request(self, request):
        if not request.url.startswith("file://"):
            self.requests.append(request.url)

    def close(self):
        self.page.close()


class Model:
    """What the page must show: the rows and the position, moved as the keys move it."""

    def __init__(self, steps):
        self.steps = {s["i"]: s for s in steps}
        self.rows = lockstep_rows(steps)
        self.designs = designs_of(steps)
        self.lockstep = len(self.designs) > 1
        self.focus = self.designs[-1] if self.lockstep else None
        self.pos = 0

    def at(self, n, design):
        cells = self.rows[n]["cells"]
        if "" in cells:
            return self.steps[cells[""]]
        key = next(iter(cells)) if design is None else design
        return self.steps[cells[key]] if key in cells else None

    @property
    def step(self):
        for d in [self.focus] + (self.designs if self.lockstep else [None]):
            s = self.at(self.pos, d)
            if s is not None:
                return s
        raise AssertionError("a row without a step")

    def move(self, n):
        if 0 <= n < len(self.rows):
            self.pos = n

    def trap_row(self, n):
        return any((s := self.at(n, d)) is not None and s["trap_no"] is not None
                   for d in (self.designs if self.lockstep else [None]))

    def search(self, pred, direction):
        n = self.pos + direction
        while 0 <= n < len(self.rows):
            if pred(n):
                self.pos = n
                return
            n += direction

    def switch_design(self):
        self.focus = self.designs[(self.designs.index(self.focus) + 1) % len(self.designs)]
        self.pos = next(n for n in range(self.pos, -1, -1) if self.at(n, self.focus))

    def goto(self, i):
        s = self.steps[i]
        if self.lockstep and s["design"]:
            self.focus = s["design"]
        self.pos = next(n for n, r in enumerate(self.rows) if i in r["cells"].values())


def regs_lines(step):
    changed = set(step["changed"])
    lines = []
    for name in REG_NAMES:
        if name not in step["regs"] or not (name in changed or name in ALWAYS):
            continue
        line = f"{'*' if name in changed else ' '} {name:<6} {step['regs'][name]:016x}"
        if name == "flags":
            line += f" [TF={step['flags']['TF']} IF={step['flags']['IF']}]"
        elif name == "ip":
            line += f" {step['where']['sym']}"
        lines.append(line.rstrip())
    return lines


def stack_lines(step):
    return [(f"{'>' if r['sp'] else ' '}{'*' if r['changed'] else ' '} {r['addr']:016x} "
             f"sp{r['off']:+#05x}  {r['value']:016x}  "
             + ("" if r.get("swapped") else f"{r['sym']:<22}")
             + (f" {r['note']}" if r["note"] else "")).rstrip() for r in step["stack"]]


def kprobe_lines(step):
    """The terminal's KPROBES panel, as render.py draws it, without blank lines."""
    return [line.rstrip() for line in kprobes_lines(step) if line.strip()]


SHOWN = """() => {
  const text = el => el ? el.innerText : null;
  const frames = [...document.querySelectorAll("#frames .frame")].map(f => ({
    i: f.dataset.i ? Number(f.dataset.i) : null, design: f.dataset.design,
    hatched: f.classList.contains("hatched"), text: f.innerText,
    header: text(f.querySelector(".step-header")),
    regs: text(f.querySelector(".panel.regs pre")),
    kprobes: text(f.querySelector(".panel.kprobes pre")),
    stack: text(f.querySelector(".panel.stack pre"))}));
  return {counter: text(document.getElementById("counter")), url: location.href, frames};
}"""


def lines(text):
    return [line.rstrip() for line in text.split("\n") if line.strip()]


def check_shown(page, model):
    """The page shows the model's step: counter, link, and the panels of every column."""
    s = model.step
    shown = page.evaluate(SHOWN)
    assert shown["counter"] == f"step {s['i']}/{s['n']}"
    assert shown["url"].endswith(f"#s={s['i']}")
    lockstep = model.lockstep and "" not in model.rows[model.pos]["cells"]
    designs = model.designs if lockstep else [None]
    assert len(shown["frames"]) == len(designs)
    for d, frame in zip(designs, shown["frames"]):
        step = model.at(model.pos, d)
        if step is None:
            assert frame["hatched"] and frame["design"] == d
            assert f"has no {model.rows[model.pos]['phase']} phase" in frame["text"]
            continue
        assert frame["i"] == step["i"] and not frame["hatched"]
        assert frame["header"].startswith(f"── step {step['i']}/{step['n']}")
        assert lines(frame["regs"]) == regs_lines(step)
        assert lines(frame["stack"]) == stack_lines(step)
        assert lines(frame["kprobes"]) == kprobe_lines(step)


def press(page, model, key):
    page.keyboard.press(key)
    if key in ("ArrowRight", "n"):
        model.move(model.pos + 1)
    elif key in ("ArrowLeft", "p"):
        model.move(model.pos - 1)
    elif key in ("Shift+ArrowRight", "N"):
        model.search(model.trap_row, 1)
    elif key in ("Shift+ArrowLeft", "P"):
        model.search(model.trap_row, -1)
    elif key in ("j", "k"):
        ip = model.step["where"]["ip"]
        model.search(lambda n: (s := model.at(n, model.focus)) is not None
                     and s["where"]["ip"] == ip, 1 if key == "j" else -1)
    elif key == "End":
        model.move(len(model.rows) - 1)
    elif key == "Home":
        model.move(0)
    else:
        raise AssertionError(f"the model does not know {key}")
    check_shown(page, model)


TICKS = """() => [...document.querySelectorAll("#timelines .tick")].map(t => [
  t.dataset.design, Number(t.dataset.row),
  t.classList.contains("hatched") ? "hatched" :
    (t.classList.contains("trap") ? "trap " + [...t.classList].find(c => /^v/.test(c)) : ""),
  t.querySelector(".lab").textContent, t.querySelector(".mk").textContent])"""


def ticks(page):
    return [tuple(t) for t in page.evaluate(TICKS)]


def tick_kind(step):
    if step is None:
        return "hatched"
    if step["trap_no"] is None:
        return ""
    return "trap " + {3: "v3", 1: "v1"}.get(step["vector"], "vx")


def screenshot_step(steps):
    """The step a screenshot shows: the first return-address swap, else the first trap."""
    for pred in (lambda s: s["event"] == "kprobes.swap", lambda s: s["trap_no"] is not None):
        found = [s for s in steps if pred(s)]
        if found:
            return found[0]["i"]
    return steps[0]["i"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LESSONS)
def test_the_page_in_a_browser(browser, trace, page_file, name):
    t = trace(name)
    path = page_file(name)
    model = Model(t.steps)
    visit = Visit(browser, path)
    page = visit.page
    try:
        check_shown(page, model)
        for key in ("ArrowRight", "ArrowRight", "ArrowLeft", "Shift+ArrowRight",
                    "Shift+ArrowLeft", "n", "N", "j", "k", "p", "P", "End", "ArrowRight",
                    "Home", "ArrowLeft"):
            press(page, model, key)

        # d: the other design in focus (its step of this phase, or the nearest before).
        page.keyboard.press("d")
        if model.lockstep:
            model.switch_design()
            assert page.inner_text("#msg") == \
                f"design ({DESIGN_LETTERS[model.focus]}) in focus"
        else:
            assert page.inner_text("#msg") == "only one design was recorded"
        check_shown(page, model)

        # The buttons.
        for button, move in (("#last", lambda: model.move(len(model.rows) - 1)),
                             ("#back", lambda: model.move(model.pos - 1)),
                             ("#first", lambda: model.move(0)),
                             ("#forward", lambda: model.move(model.pos + 1))):
            page.click(button)
            move()
            check_shown(page, model)

        # g: go to a step by number.
        target = t.steps[len(t.steps) // 2]["i"]
        page.keyboard.press("g")
        page.keyboard.type(str(target))
        page.keyboard.press("Enter")
        model.goto(target)
        check_shown(page, model)

        # The timeline: one tick a row in each track, each trap labelled with its vector.
        tracks = model.designs if model.lockstep else [None]
        labels = page.evaluate("JSON.parse(document.getElementById('lesson-data')"
                               ".textContent).labels")
        for d, n, kind, lab, _mk in ticks(page):
            s = model.at(n, d or None)
            assert kind == tick_kind(s)
            assert lab == ("-" if s is None else labels[str(s["vector"])].split(" (")[0]
                           if s["trap_no"] is not None else "")
        assert len(ticks(page)) == len(model.rows) * len(tracks)

        # Click a register: every step that wrote it is marked w; w jumps to the last write.
        page.keyboard.press("End")
        model.move(len(model.rows) - 1)
        shown = model.step
        page.click(f'#frames .frame[data-i="{shown["i"]}"] .reg[data-reg="ip"]')

        def wrote(n, d):
            s = model.at(n, d)
            return s is not None and "ip" in s["changed"]

        marked = [(d, n, mk) for d, n, _kind, _lab, mk in ticks(page) if "w" in mk]
        assert marked == [(d or "", n, "^w" if n == model.pos else "w")
                          for d in tracks for n in range(len(model.rows)) if wrote(n, d)]
        page.keyboard.press("w")
        writes = [n for n in range(model.pos + 1) if wrote(n, model.focus)]
        model.move(writes[-1] if writes else model.pos)
        check_shown(page, model)

        # The same for a stack slot: the one sp points at, in the step shown.
        slot = next(r["addr"] for r in model.step["stack"] if r["sp"])
        page.click(f'#frames .frame[data-i="{model.step["i"]}"] '
                   f'.slotrow[data-slot="{slot:016x}"]')
        marked = [(d, n) for d, n, _kind, _lab, mk in ticks(page) if "w" in mk]
        assert marked == [(d or "", n) for d in tracks for n in range(len(model.rows))
                          if (s := model.at(n, d)) is not None and
                          any(r["addr"] == slot and r["changed"] for r in s["stack"])]
        assert page.inner_text("#selection").startswith(f"selected: stack slot {slot:016x}")

        # The claims, each marked as the trace says.
        shown = page.evaluate("[...document.querySelectorAll('#claims li')]"
                              ".map(li => li.innerText)")
        assert [text.split("\n")[0] for text in shown] == \
            [("[ok]   " if c["ok"] else "[FAIL] ") + c["text"] for c in t.head["claims"]]

        # ? shows the keys, q hides them.
        assert page.locator("#help").is_hidden()
        page.keyboard.press("?")
        assert page.locator("#help").is_visible()
        page.keyboard.press("q")
        assert page.locator("#help").is_hidden()

        # Hover a byte of the slot: the same instruction lights up in CODE and SLOT.
        probed = next((s for s in t.steps if s["slot"] and
                       any(r["label"] == s["slot"]["probe"] for r in s["code"])), None)
        if probed is not None:
            model.goto(probed["i"])
            page.evaluate(f"location.hash = '#s={probed['i']}'")
            check_shown(page, model)
            frame = f'#frames .frame[data-i="{probed["i"]}"]'
            page.hover(f"{frame} .panel.slot .b >> nth=0")
            lit = page.locator(f"{frame} .insn.hl")
            assert sorted(lit.nth(k).get_attribute("data-label") for k in range(lit.count())) \
                == [probed["slot"]["probe"]] * 2
            assert page.locator(f"{frame} .panel.code .insn.hl .b.hlb").inner_text() == \
                probed["slot"]["rows"][0]["bytes"].split()[0]

        # The print stylesheet: the storyboard, a card a row, and nothing of the stepper.
        page.emulate_media(media="print")
        assert page.locator("#storyboard").is_visible()
        assert page.locator("#storyboard .card").count() == len(model.rows)
        assert not page.locator("#frames").is_visible()
        page.emulate_media(media="screen")

        if model.lockstep:
            check_hatched(page, model, name)

        # A link: #s=N opens on step N (a fresh load of the page with that fragment), and
        # a link to no step opens on step 1 and says so.
        i = min(LINK_STEP, len(t.steps))
        page.goto(path.as_uri() + f"#s={i}")
        page.reload()
        model = Model(t.steps)
        model.goto(i)
        check_shown(page, model)
        press(page, model, "ArrowRight")
        page.goto(path.as_uri() + f"#s={len(t.steps) + 1}")
        page.reload()
        check_shown(page, Model(t.steps))
        assert page.inner_text("#msg") == f"no step s={len(t.steps) + 1} in this lesson: step 1"

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        # The screenshot for review: ip selected (the steps that wrote it marked), and the
        # pointer on the slot's first byte when the step has a slot.
        shot = screenshot_step(t.steps)
        page.evaluate(f"location.hash = '#s={shot}'")
        page.click(f'#frames .frame[data-i="{shot}"] .reg[data-reg="ip"]')
        page.evaluate("window.scrollTo(0, 0)")
        page.mouse.move(0, 0)
        slot_byte = page.locator(f'#frames .frame[data-i="{shot}"] .panel.slot .b')
        if slot_byte.count():
            slot_byte.first.hover()
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        assert visit.requests == []
        assert visit.errors == []
    finally:
        visit.close()


HATCHED = """() => [...document.querySelectorAll("#lockstep td.cell.hatched")].map(c => [
  Number(c.dataset.row), c.dataset.design, getComputedStyle(c).backgroundImage, c.innerText])"""


def check_hatched(page, model, name):
    """Every phase one design lacks is a hatched cell saying so, and no other cell is."""
    missing = [(n, d) for n, r in enumerate(model.rows) for d in model.designs
               if "" not in r["cells"] and d not in r["cells"]]
    cells = page.evaluate(HATCHED)
    assert [(n, d) for n, d, _bg, _text in cells] == missing
    for n, d, background, text in cells:
        assert "repeating-linear-gradient" in background
        assert text == f"(none in design {DESIGN_LETTERS[d]})"
    # Click a hatched cell: its row, that design in focus, shown as a hatched frame
    # beside the other design's step.  (Two designs may also share every phase.)
    for n, d in missing[:1]:
        page.click(f'#lockstep td.cell.hatched[data-row="{n}"][data-design="{d}"]')
        model.focus, model.pos = d, n
        check_shown(page, model)
    phases = {model.rows[n]["phase"] for n, d in missing if d == "task"}
    if name in ("designs", "synthetic-designs"):
        assert {"R.db", "R.post"} <= phases
