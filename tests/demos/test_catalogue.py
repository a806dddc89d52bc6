"""T1 and T10 of teaching-demos.md §4.4: every core concept has a demo with claims, a
transcript and a golden trace; `kpemu demo` lists every demo; the five confusions are
each answered by a demo; docs/demos.md is the index of the catalogue as it is."""

import pytest

from kprobes.cli import main
from kprobes.demos.catalogue import CONFUSIONS, CORE, DEMOS
from kprobes.demos.transcript import golden_path, index, transcript_path, INDEX


def kpemu(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("name", CORE)
def test_every_core_concept_has_a_demo_with_claims_and_its_files(name):
    demo = DEMOS.get(name)
    assert demo is not None, f"no demo for the core concept {name!r}"
    assert demo.tier == "C"
    assert len(demo.claims) >= 3
    assert set(demo.confusions) <= set(CONFUSIONS)
    assert transcript_path(name).is_file(), f"demos/{name}_example.txt is not committed"
    assert golden_path(name).is_file(), f"the golden trace of {name} is not committed"


@pytest.mark.parametrize("number", sorted(CONFUSIONS))
def test_each_learner_confusion_is_answered_by_a_demo(number):
    assert [d.name for d in DEMOS.values() if number in d.confusions]


def test_kpemu_demo_lists_every_demo_with_its_question(capsys):
    status, out, err = kpemu(capsys, "demo")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == len(DEMOS)
    for line, (name, demo) in zip(lines, DEMOS.items()):
        assert line.split()[0] == name
        assert line.endswith(demo.question)
        assert f"[{demo.tier}]" in line


def test_an_unknown_demo_is_one_clear_error(capsys):
    status, out, err = kpemu(capsys, "demo", "kprobez")
    assert status == 2 and out == ""
    assert err == "kpemu: no demo named 'kprobez' (kpemu demo lists them)\n"


def test_json_needs_a_name(capsys):
    status, out, err = kpemu(capsys, "demo", "--json")
    assert status == 2 and out == ""
    assert "need a demo NAME" in err


def test_docs_index_is_the_catalogue():
    assert INDEX.read_text() == index(), "docs/demos.md is stale: run `make demos`"


def test_the_stepper_needs_a_terminal(capsys, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    status, out, err = kpemu(capsys, "demo", "kprobe", "--step")
    assert status == 2 and out == ""
    assert err.startswith("kpemu: --step needs a terminal")


def test_the_readme_frame_is_one_of_the_kretprobe_transcript():
    readme = (INDEX.parent.parent / "README.md").read_text()
    head = readme.index("One step of `kpemu demo kretprobe`:")
    block = readme[readme.index("```\n", head) + 4:]
    block = block[:block.index("```")]
    assert block.startswith("── step ")
    assert block in transcript_path("kretprobe").read_text()
