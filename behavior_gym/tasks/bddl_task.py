"""A BDDL problem as an `EmbeddedTask`: scene from `:objects`/`:init`, success from `:goal`.

`BDDLTask("picking_up_trash")` loads `problem0.bddl` of a BEHAVIOR-1K activity from the bddl
package (or a project-authored problem passed as text), checks that the embedded backend can
realise it (`analyze`), builds the scene (`scene_builder`), samples initial states and evaluates
goals with bddl on MuJoCo state (`predicates`).
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass, field

import mujoco
import numpy as np

from behavior_gym.tasks.base import EmbeddedTask, GoalStatus, RobotStart, TaskInfo
from behavior_gym.tasks.categories import CategorySpec, UnsupportedCategory, resolve, synset_of
from behavior_gym.tasks.instructions import goal_instruction
from behavior_gym.tasks.predicates import SUPPORTED_PREDICATES, BDDLGoal, MujocoState
from behavior_gym.tasks.scene_builder import InitialStateSampler, Problem, SamplingError, Scene, build_scene

LOGIC = frozenset({"and", "or", "not", "imply", "forall", "exists", "forn", "forpairs", "fornpairs"})
REALISED_INIT = frozenset({"ontop", "inside", "nextto", "under", "open", "closed", "toggled_on", "inroom"})
MAX_ROOMS = 4


class UnsupportedActivity(ValueError):
    """An activity the embedded backend cannot realise; the message names what is missing."""


@functools.cache
def _conditions(activity: str, definition_id: int = 0, predefined_problem: str | None = None):
    from bddl.activity import Conditions

    with contextlib.redirect_stdout(io.StringIO()):
        return Conditions(activity, definition_id, "omnigibson", predefined_problem=predefined_problem)


def load_conditions(activity: str, definition_id: int = 0, predefined_problem: str | None = None):
    """bddl `Conditions` for an activity (cached; do not mutate)."""
    return _conditions(activity, definition_id, predefined_problem)


def predicates_in(parsed: list) -> set[str]:
    """Predicate names used in parsed BDDL conditions (logic operators excluded)."""
    out: set[str] = set()

    def walk(t):
        if not isinstance(t, list) or not t:
            return
        head = t[0]
        if isinstance(head, str):
            if head in LOGIC:
                for sub in t[1:]:
                    walk(sub)
            elif head.isdigit() or head.startswith("?") or "." in head:
                return  # a quantifier's count or variable declaration
            else:
                out.add(head)
        else:
            for sub in t:
                walk(sub)

    for cond in parsed:
        walk(cond)
    return out


@dataclass
class Support:
    """Whether the embedded backend can run a BDDL problem, and if not, why."""

    missing_goal_predicates: list[str] = field(default_factory=list)
    missing_init_predicates: list[str] = field(default_factory=list)
    missing_categories: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_goal_predicates or self.missing_init_predicates or self.missing_categories
                    or self.other)

    def explain(self, name: str) -> str:
        parts = []
        if self.missing_goal_predicates:
            parts.append("goal predicates " + ", ".join(self.missing_goal_predicates))
        if self.missing_init_predicates:
            parts.append("initial-state predicates " + ", ".join(self.missing_init_predicates))
        if self.missing_categories:
            parts.append("object categories " + "; ".join(self.missing_categories))
        parts.extend(self.other)
        return (f"BEHAVIOR activity {name!r} cannot run on the embedded (MuJoCo) backend: it needs "
                + " and ".join(parts) + f". The embedded backend implements {', '.join(SUPPORTED_PREDICATES)} "
                "(plus inroom) on rigid primitives; use backend='omnigibson' for the full BEHAVIOR simulation.")


def analyze(conds, overrides: dict[str, CategorySpec] | None = None) -> Support:
    """Check predicates, categories and rooms of a parsed problem against what the backend realises."""
    s = Support()
    goal_preds = predicates_in(conds.parsed_goal_conditions)
    init_preds = predicates_in(conds.parsed_initial_conditions)
    s.missing_goal_predicates = sorted(goal_preds - set(SUPPORTED_PREDICATES))
    s.missing_init_predicates = sorted(init_preds - REALISED_INIT - set(s.missing_goal_predicates))
    for synset, insts in conds.parsed_objects.items():
        if overrides and any(i in overrides for i in insts):
            continue
        try:
            resolve(synset)
        except UnsupportedCategory as e:
            s.missing_categories.append(str(e))
    rooms = {lit[2] for lit in conds.parsed_initial_conditions if lit and lit[0] == "inroom"}
    if len(rooms) > MAX_ROOMS:
        s.other.append(f"{len(rooms)} rooms ({', '.join(sorted(rooms))}; at most {MAX_ROOMS} are laid out)")
    return s


def _mentions(parsed, name: str) -> bool:
    if isinstance(parsed, list):
        return any(_mentions(t, name) for t in parsed)
    return isinstance(parsed, str) and parsed.lstrip("?") == name


def problem_from_conditions(conds, overrides=None, adjectives=None, reach: float = 1.0,
                            regions=None) -> tuple[Problem, list[list]]:
    """The scene builder's view of a problem, and the :init literals `check_initial` verifies.

    Wildcard instances (`cabinet.n.01_*`, "any other cabinet in the scene") are dropped unless
    a condition names them.
    """
    goal = conds.parsed_goal_conditions
    objects: dict[str, list[str]] = {}
    for synset, insts in conds.parsed_objects.items():
        keep = [i for i in insts if not i.endswith("_*") or _mentions(goal, i)]
        if keep:
            objects[synset] = keep
    known = {i for v in objects.values() for i in v}
    init = []
    for lit in conds.parsed_initial_conditions:
        atom = lit[1] if lit[0] == "not" else lit
        args = atom[1:2] if atom[0] == "inroom" else atom[1:]
        if all(a in known for a in args):
            init.append(lit)
    agents = set(objects.get("agent.n.01", []))
    checked = [lit for lit in init
               if (lit[1] if lit[0] == "not" else lit)[0] != "inroom"
               and not agents & set((lit[1] if lit[0] == "not" else lit)[1:])]
    unknown = sorted(set(regions or {}) - known)
    if unknown:
        raise ValueError(f"start regions for objects the problem does not have: {unknown} (objects: {sorted(known)})")
    return Problem(objects, init, dict(overrides or {}), dict(adjectives or {}), reach, dict(regions or {})), checked


def default_max_steps(conds) -> int:
    """An episode budget for the compact embedded scenes: ~15 s per object to move, 10 s per door."""
    movable = set()
    for synset, insts in conds.parsed_objects.items():
        try:
            spec = resolve(synset)
        except UnsupportedCategory:
            continue
        if spec.is_free and _mentions(conds.parsed_goal_conditions, synset):
            movable.update(insts)
        elif spec.is_free:
            movable.update(i for i in insts if _mentions(conds.parsed_goal_conditions, i))
    preds = predicates_in(conds.parsed_goal_conditions)
    doors = 1 if ("open" in preds or "closed" in preds) else 0
    return int(min(300 + 450 * len(movable) + 300 * doors, 9000))


class BDDLTask(EmbeddedTask):
    """A BDDL problem on the embedded backend.

    Args:
        activity: the BEHAVIOR activity name (or a project skill name with `predefined_problem`).
        instance_id: which scene layout (furniture placement, sizes, variants).
        definition_id: the activity's `problemN.bddl`.
        predefined_problem: BDDL text to use instead of the packaged definition.
        source: "behavior" or "skill".
        instruction: overrides the instruction generated from the goal.
        max_steps: overrides the default episode budget.
        overrides: instance -> `CategorySpec` (variants of skill tasks: colour, size, kind).
        adjectives: instance -> word used in instructions ("red").
        names: synset -> display name used in instructions.
        reach: free objects start within this distance of the robot where their support allows.
        regions: instance -> ((x, y), (half_x, half_y)): that object starts in this rectangle of the
            robot's nominal start frame (x ahead, y to the left) instead (skill layouts).
        layout: the skill layout these regions make ("tabletop", "mobile"; None for BEHAVIOR activities),
            kept in `self.layout` for the experts.
    """

    def __init__(self, activity: str, instance_id: int = 0, *, definition_id: int = 0,
                 predefined_problem: str | None = None, source: str = "behavior", instruction: str | None = None,
                 max_steps: int | None = None, overrides: dict[str, CategorySpec] | None = None,
                 adjectives: dict[str, str] | None = None, description: str = "", names: dict[str, str] | None = None,
                 reach: float = 1.0, regions: dict | None = None, layout: str | None = None):
        self.activity = activity
        self.layout = layout
        self.instance_id = instance_id
        self.conds = load_conditions(activity, definition_id, predefined_problem)
        support = analyze(self.conds, overrides)
        if not support.ok:
            raise UnsupportedActivity(support.explain(activity))
        self.problem, self.checked_init = problem_from_conditions(self.conds, overrides, adjectives, reach, regions)
        if instruction is None:
            instruction = goal_instruction(self.conds.parsed_goal_conditions, self.problem.objects, self.problem.init,
                                           adjectives, names)
        self.instruction = instruction
        self.info = TaskInfo(
            name=activity,
            source=source,
            instruction=instruction,
            max_steps=max_steps or default_max_steps(self.conds),
            description=description or f"BEHAVIOR-1K activity {activity} (problem{definition_id}.bddl)",
        )
        self.scene: Scene | None = None
        self._bound_model = None
        self._salt = sum(activity.encode()) * 7919

    # -- EmbeddedTask ---------------------------------------------------------------------------
    def build(self, world: mujoco.MjSpec, instance_id: int) -> None:
        self.instance_id = instance_id
        self.scene = build_scene(world, self.problem, instance_id, seed_salt=self._salt)
        self._bound_model = None

    def robot_start(self, instance_id: int, rng: np.random.Generator) -> RobotStart:
        return RobotStart(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03)),
                          float(rng.uniform(-0.06, 0.06)))

    def _bind(self, model: mujoco.MjModel) -> None:
        if self._bound_model is model:
            return
        if self.scene is None:
            raise RuntimeError(f"task {self.activity!r}: build() must be called before reset()")
        self.sampler = InitialStateSampler(self.scene, model)
        self.state = MujocoState(self.scene, model)
        self.goal = BDDLGoal(self.conds, self.state, self.checked_init)
        self._bound_model = model

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        self._bind(model)
        try:
            self.sampler.sample(data, rng)
        except SamplingError as e:
            raise RuntimeError(f"task {self.activity!r} instance {self.instance_id}: {e}") from None
        self.state.update(data)

    def check_initial(self, model: mujoco.MjModel, data: mujoco.MjData) -> list[str]:
        self._bind(model)
        self.state.update(data)
        failing = self.goal.failing_initial()
        sat, unsat, _ = self.goal.evaluate()
        if not unsat:
            failing.append("(goal already satisfied)")
        return failing

    def goal_status(self, model: mujoco.MjModel, data: mujoco.MjData) -> GoalStatus:
        self._bind(model)
        self.state.update(data)
        sat, unsat, best = self.goal.evaluate()
        return GoalStatus(satisfied=sat, unsatisfied=unsat, ground_fraction=best)

    # -- for experts and tests -------------------------------------------------------------------
    def objects_of(self, synset: str) -> list[str]:
        return [n for n in self.scene.objects if synset_of(n) == synset]
