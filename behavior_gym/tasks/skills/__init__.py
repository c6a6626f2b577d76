"""The four skill families of the user guide as project-authored BDDL problems.

Each `<skill>.bddl` beside this file is a complete BDDL problem in BEHAVIOR's `omnigibson` domain,
parsed by bddl (`Conditions(..., predefined_problem=text)`) exactly like a BEHAVIOR-1K activity.
`skill_task(name, instance_id)` picks the instance's variant — which object, which colour, which
size, which target — by rewriting category names in the text and overriding shapes and colours,
so one skill is a family of short, varied problems for RL (goal placement varies per seed).

Two layouts (`layout=`, passed through `gym.make`):

- ``"tabletop"`` (default): the robot starts at the table and the object to move and its target
  start in small rectangles in front of the left arm (`TABLETOP`: about 12 x 16 cm for the object),
  as in tabletop skill suites (LIBERO's per-object regions, ManiSkill's PickCube +-10 cm): every
  reach is made from where the robot stands, without driving.
- ``"mobile"``: the object and the target start anywhere on the table within `SKILL_REACH` of the
  robot, so most episodes need the base to move as well (the layout of learning runs 1-8).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from behavior_gym.tasks.categories import CategorySpec, resolve

SKILL_DIR = Path(__file__).parent
SKILL_MAX_STEPS = 300
SKILL_REACH = 0.8  # "mobile" layout: objects start within this distance of the robot
LAYOUTS = ("tabletop", "mobile")
DEFAULT_LAYOUT = "tabletop"
# "tabletop" layout: (x, y) centre and half extents, metres, in the robot's start frame (x ahead, y
# to the left; the table's front edge is ~0.45 m ahead): the moved object in front of the left arm,
# its target (bowl, plate, lower cube, anchor) just right of it, both within the left arm's reach.
TABLETOP = {"object": ((0.60, 0.19), (0.06, 0.08)), "target": ((0.65, -0.09), (0.04, 0.06))}

COLORS = {
    "red": (0.85, 0.12, 0.1, 1.0), "green": (0.15, 0.7, 0.2, 1.0), "blue": (0.15, 0.3, 0.85, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0), "purple": (0.55, 0.2, 0.75, 1.0), "orange": (0.98, 0.55, 0.08, 1.0),
    "white": (0.92, 0.92, 0.9, 1.0), "black": (0.12, 0.12, 0.12, 1.0),
}


@dataclass
class SkillVariant:
    text: str  # the BDDL problem
    overrides: dict[str, CategorySpec] = field(default_factory=dict)
    adjectives: dict[str, str] = field(default_factory=dict)
    instruction: str | None = None
    moved: str | None = None  # the instance the goal moves
    target: str | None = None  # where it goes (container, support or anchor)


def _read(name: str) -> str:
    return (SKILL_DIR / f"{name}.bddl").read_text()


def _scaled(spec: CategorySpec, f: float) -> CategorySpec:
    return replace(spec, size=tuple(s * f for s in spec.size))


def _scale_of(instance_id: int, spread: float = 0.1) -> float:
    return 1.0 + spread * (((instance_id * 7) % 5) - 2) / 2


PICK_OBJECTS = [("apple.n.01", None), ("cube.n.05", "red"), ("can__of__soda.n.01", None), ("orange.n.01", None),
                ("cube.n.05", "green"), ("tennis_ball.n.01", None), ("mug.n.04", None), ("cube.n.05", "blue"),
                ("cube.n.05", "yellow")]
PICK_TARGETS = [("bowl.n.01", "inside"), ("plate.n.04", "ontop")]


def pick_and_place(instance_id: int) -> SkillVariant:
    synset, color = PICK_OBJECTS[instance_id % len(PICK_OBJECTS)]
    target, relation = PICK_TARGETS[(instance_id // len(PICK_OBJECTS)) % len(PICK_TARGETS)]
    text = _read("pick_and_place").replace("apple.n.01", synset).replace("bowl.n.01", target)
    if relation != "inside":
        text = text.replace("(inside ?", f"({relation} ?")
    obj = _scaled(resolve(synset), _scale_of(instance_id))
    if color:
        obj = replace(obj, rgba=COLORS[color])
    tgt = resolve(target)
    tgt = replace(tgt, size=(0.21, 0.21, tgt.size[2]))  # a roomy target: this is a skill, not a puzzle
    return SkillVariant(text, {f"{synset}_1": obj, f"{target}_1": tgt}, {f"{synset}_1": color} if color else {},
                        moved=f"{synset}_1", target=f"{target}_1")


STACK_COLORS = [("red", "blue"), ("green", "yellow"), ("blue", "red"), ("yellow", "purple"), ("orange", "green"),
                ("purple", "orange")]


def stacking(instance_id: int) -> SkillVariant:
    top, bottom = STACK_COLORS[instance_id % len(STACK_COLORS)]
    cube = resolve("cube.n.05")
    f = _scale_of(instance_id, 0.12)
    return SkillVariant(
        _read("stacking"),
        {"cube.n.05_1": replace(_scaled(cube, f), rgba=COLORS[top]),
         "cube.n.05_2": replace(_scaled(cube, 1.15 * f), rgba=COLORS[bottom])},
        {"cube.n.05_1": top, "cube.n.05_2": bottom},
        moved="cube.n.05_1", target="cube.n.05_2",
    )


DRAWER_LOOKS = [("wooden", (0.62, 0.45, 0.28, 1.0)), ("white", (0.9, 0.9, 0.88, 1.0)),
                ("grey", (0.5, 0.52, 0.55, 1.0)), ("blue", (0.3, 0.4, 0.65, 1.0))]
DRAWER_SIZES = [(0.45, 0.7, 0.78), (0.42, 0.6, 0.72), (0.48, 0.8, 0.8)]


def open_drawer(instance_id: int) -> SkillVariant:
    look, rgba = DRAWER_LOOKS[instance_id % len(DRAWER_LOOKS)]
    size = DRAWER_SIZES[(instance_id // len(DRAWER_LOOKS)) % len(DRAWER_SIZES)]
    spec = CategorySpec("drawer_cabinet", size, 40.0, rgba, name="chest of drawers")
    return SkillVariant(_read("open_drawer"), {"cabinet.n.01_1": spec}, {"cabinet.n.01_1": look},
                        instruction=f"Open a drawer of the {look} chest of drawers.")


REARRANGE_PAIRS = [("mug.n.04", "bowl.n.01"), ("apple.n.01", "plate.n.04"), ("can__of__soda.n.01", "mug.n.04"),
                   ("orange.n.01", "bowl.n.01"), ("cube.n.05", "plate.n.04"), ("tennis_ball.n.01", "mug.n.04")]


def rearrangement(instance_id: int) -> SkillVariant:
    obj, anchor = REARRANGE_PAIRS[instance_id % len(REARRANGE_PAIRS)]
    text = _read("rearrangement").replace("mug.n.04", "@A@").replace("bowl.n.01", "@B@")
    text = text.replace("@A@", obj).replace("@B@", anchor)
    overrides = {f"{obj}_1": _scaled(resolve(obj), _scale_of(instance_id))}
    adjectives = {}
    if obj == "cube.n.05":
        color = list(COLORS)[instance_id % 4]
        overrides[f"{obj}_1"] = replace(overrides[f"{obj}_1"], rgba=COLORS[color])
        adjectives[f"{obj}_1"] = color
    return SkillVariant(text, overrides, adjectives, moved=f"{obj}_1", target=f"{anchor}_1")


SKILLS = {
    "pick_and_place": (pick_and_place, "Pick an object up from the table and put it in a bowl or on a plate"),
    "stacking": (stacking, "Stack one cube on another"),
    "open_drawer": (open_drawer, "Open a drawer of a chest of drawers"),
    "rearrangement": (rearrangement, "Move an object next to another one on the table"),
}


def layout_kwargs(task: str, layout: str | None, backend: str = "mujoco") -> dict:
    """`gym.make` keywords for a layout chosen in a config: `{"layout": layout}` for an embedded skill task
    when a layout is set, else nothing (BEHAVIOR activities and the OmniGibson backend have no skill
    layouts). An unknown layout fails here, before any env is made."""
    if layout is None:
        return {}
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS} (null: each skill task's default, "
                         f"{DEFAULT_LAYOUT!r})")
    return {"layout": layout} if task in SKILLS and backend != "omnigibson" else {}


def skill_task(name: str, instance_id: int = 0, layout: str = DEFAULT_LAYOUT, **kw):
    """The `BDDLTask` of skill `name` for `instance_id`, in `layout` ("tabletop" or "mobile")."""
    from behavior_gym.tasks.bddl_task import BDDLTask

    if layout not in LAYOUTS:
        raise ValueError(f"skill layout {layout!r} is not one of {LAYOUTS}: 'tabletop' starts the objects in front of "
                         "the robot's left arm, 'mobile' anywhere on the table within reach of a short drive")
    make, description = SKILLS[name]
    v = make(instance_id)
    regions = {}
    if layout == "tabletop" and v.moved is not None:
        regions = {v.moved: TABLETOP["object"], v.target: TABLETOP["target"]}
    return BDDLTask(name, instance_id, predefined_problem=v.text, source="skill",
                    instruction=kw.pop("instruction", None) or v.instruction,
                    max_steps=kw.pop("max_steps", None) or SKILL_MAX_STEPS, overrides=v.overrides,
                    adjectives=v.adjectives, description=description, reach=SKILL_REACH, regions=regions,
                    layout=layout, **kw)
