"""The catalogue: names, errors, skill variants and instruction files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from behavior_gym.backends.mujoco.backend import MujocoBackend
from behavior_gym.tasks.bddl_task import UnsupportedActivity
from behavior_gym.tasks.catalogue import CHALLENGE_TASKS, list_embedded_tasks, make_task
from behavior_gym.tasks.skills import SKILLS


def test_list_has_skills_then_challenge_tasks():
    infos = list_embedded_tasks()
    names = [i.name for i in infos]
    assert names[:4] == list(SKILLS)
    assert all(i.source == "skill" for i in infos[:4])
    assert all(i.source == "behavior" and i.name in CHALLENGE_TASKS for i in infos[4:])
    assert len(set(names)) == len(names)
    for info in infos:
        assert info.instruction and info.instruction[0].isupper() and info.instruction.endswith(".")
        assert info.instruction.isascii()
        assert info.max_steps > 0
    assert all(i.max_steps <= 300 for i in infos[:4])


def test_unknown_task_suggests_close_names():
    with pytest.raises(ValueError, match="pick_and_place"):
        make_task("pick_and_plcae")


def test_unsupported_activity_names_what_is_missing():
    with pytest.raises(UnsupportedActivity, match="cooked"):
        make_task("cook_bacon")
    with pytest.raises(UnsupportedActivity, match="covered"):
        make_task("clean_a_trumpet")
    assert issubclass(UnsupportedActivity, ValueError)


@pytest.mark.parametrize("skill", list(SKILLS))
def test_skill_variants_build_reset_and_differ(skill):
    instructions, colors = set(), set()
    for instance_id in range(6):
        task = make_task(skill, instance_id=instance_id)
        backend = MujocoBackend(task, instance_id=instance_id)
        for seed in range(2):
            backend.reset(np.random.default_rng(seed))
            assert task.check_initial(backend.model, backend.data) == []
            assert backend.goal_status().unsatisfied
        instructions.add(task.info.instruction)
        colors.add(tuple(np.round(backend.model.geom_rgba[-1], 3)))
    assert len(instructions) > 1 or len(colors) > 1


def test_instruction_file_json_and_jsonl(tmp_path):
    p = tmp_path / "i.json"
    p.write_text(json.dumps({"turning_on_radio": "Switch the radio on, please."}))
    assert make_task("turning_on_radio", instructions_path=p).info.instruction == "Switch the radio on, please."
    q = tmp_path / "i.jsonl"
    q.write_text('{"task": "pick_and_place", "instruction": "Apple into bowl."}\n{"stacking": "Stack them."}\n')
    assert make_task("pick_and_place", instructions_path=q).info.instruction == "Apple into bowl."
    assert make_task("stacking", instructions_path=q).info.instruction == "Stack them."
    # Tasks not in the file keep their generated instruction.
    assert make_task("open_drawer", instructions_path=q).info.instruction.startswith("Open a drawer")
