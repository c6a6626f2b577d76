"""The tasks the embedded backend can run, by name.

Two sources, one interface (`EmbeddedTask`):

- **skill** tasks: the user guide's four families (`pick_and_place`, `stacking`, `open_drawer`,
  `rearrangement`), project-authored BDDL problems in `skills/`, short enough for RL.
- **behavior** tasks: BEHAVIOR-1K activities from the bddl package. The default list holds the
  BEHAVIOR Challenge 2025 tasks whose goals use only predicates the embedded backend implements
  (computed from the bddl files by `supported_challenge_tasks()`, not hand-picked). Any other
  bddl activity that passes the same check can be made by name too, and
  `list_embedded_tasks(all_activities=True)` lists them all.

`make_task` raises `ValueError` for a name it does not know (with close matches) and
`UnsupportedActivity` (a `ValueError`) for a bddl activity it cannot realise, naming the
predicates or categories it lacks.
"""

from __future__ import annotations

import difflib
import functools
import os

from behavior_gym.tasks.base import EmbeddedTask, TaskInfo
from behavior_gym.tasks.bddl_task import BDDLTask, UnsupportedActivity, analyze, load_conditions
from behavior_gym.tasks.instructions import load_instruction_file
from behavior_gym.tasks.skills import SKILLS, skill_task

# BEHAVIOR Challenge 2025, in the order of TASK_NAMES_TO_INDICES (OmniGibson learning/utils/eval_utils.py).
CHALLENGE_TASKS = (
    "turning_on_radio", "picking_up_trash", "putting_away_Halloween_decorations", "cleaning_up_plates_and_food",
    "can_meat", "setting_mousetraps", "hiding_Easter_eggs", "picking_up_toys", "rearranging_kitchen_furniture",
    "putting_up_Christmas_decorations_inside", "set_up_a_coffee_station_in_your_kitchen",
    "putting_dishes_away_after_cleaning", "preparing_lunch_box", "loading_the_car", "carrying_in_groceries",
    "bringing_in_wood", "moving_boxes_to_storage", "bringing_water", "tidying_bedroom", "outfit_a_basic_toolbox",
    "sorting_vegetables", "collecting_childrens_toys", "putting_shoes_on_rack", "boxing_books_up_for_storage",
    "storing_food", "clearing_food_from_table_into_fridge", "assembling_gift_baskets", "sorting_household_items",
    "getting_organized_for_work", "clean_up_your_desk", "setting_the_fire", "clean_boxing_gloves",
    "wash_a_baseball_cap", "wash_dog_toys", "hanging_pictures", "attach_a_camera_to_a_tripod", "clean_a_patio",
    "clean_a_trumpet", "spraying_for_bugs", "spraying_fruit_trees", "make_microwave_popcorn", "cook_cabbage",
    "chop_an_onion", "slicing_vegetables", "chopping_wood", "cook_hot_dogs", "cook_bacon", "freeze_pies",
    "canning_food", "make_pizza",
)


@functools.lru_cache(maxsize=1)
def all_activities() -> tuple[str, ...]:
    from bddl.activity import get_all_activities

    return tuple(sorted(get_all_activities()))


@functools.cache
def unsupported_reason(activity: str) -> str | None:
    """None if the embedded backend can realise `activity`'s problem0, else why not."""
    support = analyze(load_conditions(activity))
    return None if support.ok else support.explain(activity)


def supported_challenge_tasks() -> list[str]:
    """The 2025 challenge tasks whose predicates and categories the embedded backend realises."""
    return [t for t in CHALLENGE_TASKS if unsupported_reason(t) is None]


def supported_activities() -> list[str]:
    """Every bddl activity (problem0) whose predicates and categories the embedded backend realises."""
    return [a for a in all_activities() if unsupported_reason(a) is None]


@functools.cache
def _info(name: str) -> TaskInfo:
    if name in SKILLS:
        return skill_task(name, 0).info
    task = BDDLTask(name)
    if name in CHALLENGE_TASKS:
        return TaskInfo(name, "behavior", task.info.instruction, task.info.max_steps,
                        description=f"BEHAVIOR Challenge 2025 task {CHALLENGE_TASKS.index(name)}")
    return task.info


def list_embedded_tasks(all_activities: bool = False) -> list[TaskInfo]:
    """Skill tasks, then the supported BEHAVIOR Challenge 2025 tasks (challenge order).

    With `all_activities=True`, every other supported BEHAVIOR-1K activity follows (alphabetical).
    The order defines the env's `task_id`, so it only ever grows at the end.
    """
    names = list(SKILLS) + supported_challenge_tasks()
    if all_activities:
        names += [a for a in supported_activities() if a not in names]
    return [_info(n) for n in names]


def make_task(name: str, instance_id: int = 0, instructions_path: str | os.PathLike | None = None,
              **kw) -> EmbeddedTask:
    """The embedded task `name` for `instance_id`.

    Args:
        name: a skill task or a BEHAVIOR-1K activity.
        instance_id: the scene variant (layout, sizes; for skills also object, colour, target).
        instructions_path: a JSON or JSONL file mapping task names to instructions, overriding
            the instruction generated from the BDDL goal.
        **kw: passed to `BDDLTask` (e.g. `definition_id`, `max_steps`, `instruction`).
    """
    if instructions_path is not None:
        mapping = load_instruction_file(instructions_path)
        if name in mapping and "instruction" not in kw:
            kw["instruction"] = mapping[name]
    if name in SKILLS:
        return skill_task(name, instance_id, **kw)
    if name == "reach":  # learning sanity (behavior_gym.tasks.reach); not listed, so task ids stay put
        from behavior_gym.tasks.reach import ReachTask

        return ReachTask(instance_id, **kw)
    if name in all_activities():
        reason = unsupported_reason(name) if kw.get("definition_id", 0) == 0 else None
        if reason is not None:
            raise UnsupportedActivity(reason)
        return BDDLTask(name, instance_id, **kw)
    known = list(SKILLS) + list(all_activities())
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown task {name!r}.{hint} behavior_gym.list_tasks() lists the tasks the embedded backend "
                     f"runs ({len(SKILLS)} skills and {len(supported_challenge_tasks())} BEHAVIOR challenge tasks).")
