"""Scripted experts for the embedded backend: `make_expert(env)` and `EXPERTS` (task -> class)."""

from __future__ import annotations

from behavior_gym.experts.base import ExpertFailure, ScriptedExpert
from behavior_gym.experts.behavior import GoalExpert
from behavior_gym.experts.skills import OpenDrawerExpert, PickAndPlaceExpert, RearrangementExpert, StackingExpert

EXPERTS: dict[str, type[ScriptedExpert]] = {
    "pick_and_place": PickAndPlaceExpert,
    "stacking": StackingExpert,
    "open_drawer": OpenDrawerExpert,
    "rearrangement": RearrangementExpert,
}
# BEHAVIOR challenge tasks the goal-driven expert solves reliably (benchmarks/expert_success.py).
# `GoalExpert(env)` runs on any inside/ontop/nextto/toggled_on goal, but grasping in crowded
# challenge scenes is not reliable yet, so only verified tasks are listed here.
BEHAVIOR_EXPERT_TASKS = ("turning_on_radio", "picking_up_trash", "setting_mousetraps", "picking_up_toys",
                         "outfit_a_basic_toolbox")
EXPERTS.update({t: GoalExpert for t in BEHAVIOR_EXPERT_TASKS})


def make_expert(env) -> ScriptedExpert:
    """The scripted expert for `env`'s task (raises `ValueError` if there is none)."""
    task = env.unwrapped.task
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; experts exist for {', '.join(EXPERTS)}")
    return EXPERTS[task](env)


__all__ = ["BEHAVIOR_EXPERT_TASKS", "EXPERTS", "ExpertFailure", "GoalExpert", "ScriptedExpert", "make_expert"]
