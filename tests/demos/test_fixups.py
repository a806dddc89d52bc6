"""kpemu demo fixups: the three states of each fix-up, recorded once per module."""

import pytest

from kprobes.demos.lessons.fixups import SCENES
from tests.demos.conftest import recorded

TF, IF = 0x100, 0x200


@pytest.fixture(scope="module")
def lesson():
    return recorded("fixups")


def scene_steps(lesson, key):
    return [s for s in lesson.steps if s["facts"].get("scene") == key]


def test_every_claim_holds(lesson):
    assert lesson.failed_claims() == []
    assert len(lesson.claims) == 12


def test_four_steps_a_scene_and_one_trap_pair_each(lesson):
    assert len(lesson.steps) == 4 * len(SCENES)
    for scene in SCENES:
        steps = scene_steps(lesson, scene.key)
        assert [(s["phase"], s["event"], s["vector"]) for s in steps] == [
            ("before", "kprobes.singlestep", None), ("raw", "kprobes.trap", 1),
            ("fixed", "kprobes.fixup", None), ("result", "note", None)]
    assert [s["trap_no"] for s in lesson.select(vector=1)] == list(range(1, len(SCENES) + 1))


def test_the_before_state_is_the_slot_with_tf_set(lesson):
    for step in lesson.select(phase="before"):
        f = lesson.facts["scenes"][step["facts"]["scene"]]
        assert step["regs"]["ip"] == f["slot"] and step["flags"] == {"TF": 1, "IF": 0}
        assert step["slot"]["rows"][0]["mark"] == ">"
        # prepare_singlestep() reports before kprobe_handler() sets HIT_SS
        assert step["kprobes"]["status"] == "KPROBE_HIT_ACTIVE"


def test_ip_is_marked_changed_by_every_fixup_that_moves_it(lesson):
    for step in lesson.select(phase="fixed"):
        f = lesson.facts["scenes"][step["facts"]["scene"]]
        moved = f["fixed"]["ip"] != f["raw"]["ip"]
        assert ("ip" in step["changed"]) == moved
        assert step["flags"]["TF"] == 0
    moved = {s["facts"]["scene"] for s in lesson.select(phase="fixed") if "ip" in s["changed"]}
    assert moved == {s.key for s in SCENES} - {"ret", "call_indirect"}


def test_the_repaired_stack_slot_is_marked(lesson):
    for key in ("call", "pushf", "call_indirect"):
        fixed = scene_steps(lesson, key)[2]
        top = next(row for row in fixed["stack"] if row["sp"])
        assert top["changed"] and top["value"] == lesson.facts["scenes"][key]["fixed"]["top"]
    bug = scene_steps(lesson, "call_indirect_2613")[2]
    assert not next(row for row in bug["stack"] if row["sp"])["changed"]


def test_riprel_slot_shows_the_rewritten_displacement(lesson):
    f = lesson.facts["scenes"]["riprel"]
    before = scene_steps(lesson, "riprel")[0]
    off = f["disp"]["offset"]
    old_disp = (f["disp"]["old"] & 0xFFFFFFFF).to_bytes(4, "little")
    new_disp = (f["disp"]["new"] & 0xFFFFFFFF).to_bytes(4, "little")
    assert before["slot"]["rows"][0]["repaired"] == \
        [off + n for n in range(4) if old_disp[n] != new_disp[n]] != []
    assert f["copy"][off:off + 4] == (f["disp"]["new"] & 0xFFFFFFFF).to_bytes(4, "little")
    assert f["result"] == lesson.facts["lt_value"] == 0x1122334455667788


def test_call_rel32_raw_and_fixed(lesson):
    f = lesson.facts["scenes"]["call"]
    assert (f["raw"]["top"] - f["slot"], f["fixed"]["top"] - f["addr"]) == (5, 5)
    assert f["result"] == f["addr"] + 5            # lt_callee saw the repaired address


def test_pushf_and_if_modifiers(lesson):
    s = lesson.facts["scenes"]
    assert (s["pushf"]["raw"]["top"] & (TF | IF), s["pushf"]["fixed"]["top"] & (TF | IF)) \
        == (TF, IF)
    assert (s["cli"]["fixed"]["flags"] & IF, s["cli"]["without_rule"] & IF) == (0, IF)
    assert s["sti"]["fixed"]["flags"] & IF == IF
    assert (s["cli"]["result"], s["sti"]["result"]) == (0, IF)


def test_the_2613_call_goes_wild(lesson):
    s = lesson.facts["scenes"]
    bug, fixed = s["call_indirect_2613"], s["call_indirect"]
    callee = lesson.facts["lt_callee"]
    assert (fixed["resume"], bug["resume"]) == ("CALL_ABS", "RELOCATE")
    assert bug["fixed"]["ip"] == bug["addr"] + callee - bug["slot"]
    assert "did not return within 1000 instructions" in bug["lost"]["message"]
    assert bug["result"] is None and fixed["result"] == fixed["addr"] + 2
    assert bug["fixed"]["sym"] == f"{bug['fixed']['ip']:#x}"      # in no function
    old, new = bug["lost"]["callee_byte"]
    assert old == 0x48 and new != old and bug["lost"]["ax"] == callee
    result = scene_steps(lesson, "call_indirect_2613")[3]
    assert f"{bug['fixed']['ip']:#x}" in result["narration"]
