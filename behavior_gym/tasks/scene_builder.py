"""Scenes from BDDL: rooms, furniture and objects as MuJoCo primitives, and initial-state sampling.

`build_scene(world, problem, instance_id)` adds an activity's `:objects` to an `MjSpec` world:

- Rooms named in `inroom` become floor regions that meet at the robot's start: one room is the
  whole floor, two are the half-planes left and right of the robot, three a half-plane and two
  quadrants, four the quadrants (flat coloured rectangles; the physical floor is the world's).
  So every room is next to the robot and nothing needs a corridor.
- Furniture (categories of a fixture kind, see `categories.py`) is welded to the world in a ring
  around the robot, facing it, inside its room, the front edge ~0.45 m from the base centre (the
  ring grows if it is crowded). Doors are hinged and drawers slide, with a handle to grasp.
- Everything else is a free body: an item (one primitive), an open container (a floor and four
  walls), a plate (a flat disc or slab), a laptop (a base and a hinged lid). Toggleable items get
  a spring-loaded push button and an indicator light.

`sample_initial_state(scene, model, data, rng)` realises `:init` per episode: `ontop`, `inside`,
`under`, `nextto` (free objects, parents first, without overlaps, preferring places the robot can
reach from its start), `open`/`closed` (joint positions) and `toggled_on` (latched state in
`data.userdata`). The backend settles physics afterwards and `check_initial` re-evaluates the
same conditions with the predicates of `predicates.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import mujoco
import numpy as np

from behavior_gym.tasks.categories import ROOM_COLORS, CategorySpec, display_name, resolve

# Collision bits shared with the robot model (backends/mujoco/robot.py): static 1, robot 2, object 4.
COLLIDE_STATIC = (1, 2 | 4)
COLLIDE_OBJECT = (4, 1 | 2 | 4)
VISUAL = (0, 0)

ROOM_EXTENT = 3.5  # half-size of the floor area, metres
RING_NEAR = 0.45  # distance from the robot start to a fixture's front face
FLOOR_MIN_R = 0.55  # keep free objects on the floor out of the robot's footprint and arm sweep
# The robot's hands at its reset pose (robot frame): keep things that reach above HANDS_LOW_Z away.
HANDS_LOW_Z, HANDS_XY, HANDS_R = 0.86, ((0.51, 0.32), (0.51, -0.32)), 0.1
TALL_EXTRA = 0.15
SPACING = 0.035  # free space kept between objects on furniture and floors (room for a gripper)
DRAWER_EXTRA = 0.2
BUTTON_TRAVEL = 0.008
USERDATA_PER_TOGGLE = 2  # (state, latch)
_G = mujoco.mjtGeom


# ---------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------
@dataclass
class Surface:
    """A horizontal rectangle objects can rest on, in the frame of `body` (z = top)."""

    body: str
    center: tuple[float, float, float]
    half: tuple[float, float]
    clearance: float = 10.0  # free height above it


@dataclass
class Cavity:
    """A box-shaped inside of a container, in the frame of `body`."""

    body: str
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    closed_top: bool = False


@dataclass
class Openable:
    joint: str
    open_value: float  # joint position when fully open; closed is 0


@dataclass
class SceneObject:
    """One BDDL object instance as it exists in the MuJoCo scene."""

    name: str
    synset: str
    spec: CategorySpec
    role: str  # "fixture" | "free" | "floor" | "agent"
    room: str | None = None
    body: str | None = None
    half: tuple[float, float, float] = (0.0, 0.0, 0.0)  # free objects: half extents in the body frame
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)  # fixtures: x, y, yaw of the footprint centre
    surfaces: list[Surface] = field(default_factory=list)
    cavities: list[Cavity] = field(default_factory=list)
    openables: list[Openable] = field(default_factory=list)
    button_joint: str | None = None
    led_geom: str | None = None
    toggle_slot: int | None = None  # index into data.userdata of (state, latch)
    freejoint: str | None = None
    adjective: str = ""  # e.g. a colour, for instructions

    @property
    def display(self) -> str:
        name = display_name(self.synset)
        return f"{self.adjective} {name}" if self.adjective else name


@dataclass
class Room:
    name: str
    lo: tuple[float, float]
    hi: tuple[float, float]
    angles: tuple[float, float]  # angular range seen from the robot start (radians)

    def contains(self, x: float, y: float, margin: float = 0.0) -> bool:
        return (self.lo[0] + margin <= x <= self.hi[0] - margin) and (self.lo[1] + margin <= y <= self.hi[1] - margin)


@dataclass
class Placement:
    """How a free object is placed at reset: relative to `parent` by `relation`."""

    obj: str
    relation: str  # "ontop" | "inside" | "under" | "nextto"
    parent: str


@dataclass
class Scene:
    objects: dict[str, SceneObject]
    rooms: dict[str, Room]
    agent_room: str
    placements: list[Placement]
    init_joint_state: dict[str, bool]  # object -> open?
    init_toggled: dict[str, bool]
    userdata_offset: int = 0
    reach: float = 1.0
    # Free object -> ((x, y) centre, (x, y) half extents): the object starts inside this rectangle,
    # in the frame of the robot's nominal start (origin, facing +x), where its support allows.
    regions: dict[str, tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=dict)

    def free_objects(self) -> list[SceneObject]:
        return [o for o in self.objects.values() if o.role == "free"]

    def floor_room(self, floor_name: str) -> Room:
        return self.rooms[self.objects[floor_name].room or self.agent_room]


@dataclass
class Problem:
    """The parts of a parsed BDDL problem the builder needs."""

    objects: dict[str, list[str]]  # synset -> instance names (wildcards removed)
    init: list[list]  # parsed init literals
    overrides: dict[str, CategorySpec] = field(default_factory=dict)  # instance -> spec
    adjectives: dict[str, str] = field(default_factory=dict)  # instance -> adjective
    reach: float = 1.0  # free objects start within this distance of the robot where supports allow
    regions: dict[str, tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=dict)  # see Scene


# ---------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------
def _yaw_quat(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _box(body, half, pos, rgba, collide=COLLIDE_STATIC, name=None, mass=None, quat=None, **kw):
    args = dict(type=_G.mjGEOM_BOX, size=list(half), pos=list(pos), rgba=list(rgba),
                contype=collide[0], conaffinity=collide[1], **kw)
    if name:
        args["name"] = name
    if mass is not None:
        args["mass"] = mass
    if quat is not None:
        args["quat"] = list(quat)
    return body.add_geom(**args)


def _shade(rgba, f):
    return (min(rgba[0] * f, 1), min(rgba[1] * f, 1), min(rgba[2] * f, 1), rgba[3])


def _handle(body, name, pos, vertical: bool, rgba=(0.75, 0.75, 0.78, 1), length=0.16):
    """A bar standing 4 cm off a front panel (at `pos` = panel front centre), easy to grasp."""
    x, y, z = pos
    half = (0.011, 0.011, length / 2) if vertical else (0.011, length / 2, 0.011)
    _box(body, half, (x + 0.04, y, z), rgba, name=f"{name}/handle", mass=0.05)
    for s in (-1, 1):  # two standoffs
        off = (0, 0, s * length * 0.4) if vertical else (0, s * length * 0.4, 0)
        _box(body, (0.02, 0.008, 0.008), (x + 0.02, y + off[1], z + off[2]), rgba, mass=0.02)


# ---------------------------------------------------------------------------------------------
# Furniture builders: local frame = footprint centre on the floor, +x = front (towards the robot)
# ---------------------------------------------------------------------------------------------
def _build_table(body, o: SceneObject, size):
    d, w, h = size
    t = 0.03
    rgba = o.spec.rgba
    _box(body, (d / 2, w / 2, t / 2), (0, 0, h - t / 2), rgba, name=f"{o.name}/top")
    for sx in (-1, 1):
        for sy in (-1, 1):
            _box(body, (0.025, 0.025, (h - t) / 2), (sx * (d / 2 - 0.05), sy * (w / 2 - 0.05), (h - t) / 2),
                 _shade(rgba, 0.75))
    o.surfaces.append(Surface(o.body, (0, 0, h), (d / 2, w / 2)))


def _build_counter(body, o: SceneObject, size):
    d, w, h = size
    _box(body, (d / 2 - 0.02, w / 2, (h - 0.04) / 2), (-0.02, 0, (h - 0.04) / 2), _shade(o.spec.rgba, 0.8))
    _box(body, (d / 2, w / 2, 0.02), (0, 0, h - 0.02), o.spec.rgba, name=f"{o.name}/top")
    o.surfaces.append(Surface(o.body, (0, 0, h), (d / 2, w / 2)))


def _build_block(body, o: SceneObject, size):
    d, w, h = size
    _box(body, (d / 2, w / 2, h / 2), (0, 0, h / 2), o.spec.rgba)
    o.surfaces.append(Surface(o.body, (0, 0, h), (d / 2, w / 2)))


def _carcass(body, o: SceneObject, size, levels: int, back=True, plinth=0.06, t=0.02, top=True):
    """Sides, back, bottom, top and `levels - 1` shelves; returns the z of each level's floor."""
    d, w, h = size
    rgba = o.spec.rgba
    _box(body, (d / 2, w / 2, plinth / 2), (0, 0, plinth / 2), _shade(rgba, 0.7))
    for s in (-1, 1):
        _box(body, (d / 2, t / 2, (h - plinth) / 2), (0, s * (w / 2 - t / 2), plinth + (h - plinth) / 2), rgba)
    if back:
        _box(body, (t / 2, w / 2 - t, (h - plinth) / 2), (-d / 2 + t / 2, 0, plinth + (h - plinth) / 2), rgba)
    if top:
        _box(body, (d / 2, w / 2, t / 2), (0, 0, h - t / 2), rgba, name=f"{o.name}/top")
        o.surfaces.append(Surface(o.body, (0, 0, h), (d / 2, w / 2)))
    inner_top = h - t if top else h
    floors = [plinth + (inner_top - plinth) * k / levels for k in range(levels)]
    for z in floors[1:]:
        _box(body, (d / 2 - t, w / 2 - t, t / 2), (0, 0, z - t / 2), _shade(rgba, 0.9))
    x0 = -d / 2 + (t if back else 0)
    for k, z in enumerate(floors):
        z_hi = floors[k + 1] - t if k + 1 < levels else inner_top
        cx, hx = (x0 + d / 2 - 0.03) / 2, (d / 2 - 0.03 - x0) / 2  # 3 cm clear of the door
        o.cavities.append(Cavity(o.body, (cx, 0, (z + z_hi) / 2), (hx, w / 2 - t, (z_hi - z) / 2), closed_top=True))
    return floors


def _door(body, o: SceneObject, size, plinth=0.06, t=0.02, mass=3.0):
    """A door hinged on the left edge (+y) of the front face; opens outward (positive angle)."""
    d, w, h = size
    door = body.add_body(name=f"{o.name}/door", pos=[d / 2 + t / 2, w / 2, 0])
    jname = f"{o.name}/door_hinge"
    door.add_joint(name=jname, type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 0, 1], range=[0, 2.0], damping=2.0,
                   frictionloss=0.2, armature=0.05)
    hz = (h - plinth) / 2
    _box(door, (t / 2, w / 2, hz), (0, -w / 2, plinth + hz), _shade(o.spec.rgba, 1.08), mass=mass,
         name=f"{o.name}/door_panel")
    _handle(door, f"{o.name}/door", (t / 2, -w + 0.07, plinth + hz), vertical=True)
    o.openables.append(Openable(jname, 1.9))


def _build_cabinet(body, o: SceneObject, size):
    _carcass(body, o, size, levels=2)
    _door(body, o, size)


def _build_fridge(body, o: SceneObject, size):
    _carcass(body, o, size, levels=3, plinth=0.08)
    _door(body, o, size, plinth=0.08, mass=5.0)


def _build_dishwasher(body, o: SceneObject, size):
    d, w, h = size
    plinth, t = 0.08, 0.02
    _carcass(body, o, size, levels=1, plinth=plinth)
    door = body.add_body(name=f"{o.name}/door", pos=[d / 2 + t / 2, 0, plinth])
    jname = f"{o.name}/door_hinge"
    door.add_joint(name=jname, type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 1, 0], range=[0, 1.57], damping=2.0,
                   frictionloss=0.2, armature=0.05)
    hz = (h - plinth) / 2
    _box(door, (t / 2, w / 2, hz), (0, 0, hz), _shade(o.spec.rgba, 1.05), mass=4.0, name=f"{o.name}/door_panel")
    _handle(door, f"{o.name}/door", (t / 2, 0, 2 * hz - 0.06), vertical=False, length=0.3)
    o.openables.append(Openable(jname, 1.45))


def _build_drawer_cabinet(body, o: SceneObject, size, n_drawers: int = 2):
    d, w, h = size
    plinth, t = 0.06, 0.02
    rgba = o.spec.rgba
    _box(body, (d / 2, w / 2, plinth / 2), (0, 0, plinth / 2), _shade(rgba, 0.7))
    for s in (-1, 1):
        _box(body, (d / 2, t / 2, (h - plinth) / 2), (0, s * (w / 2 - t / 2), plinth + (h - plinth) / 2), rgba)
    _box(body, (t / 2, w / 2 - t, (h - plinth) / 2), (-d / 2 + t / 2, 0, plinth + (h - plinth) / 2), rgba)
    _box(body, (d / 2, w / 2, t / 2), (0, 0, h - t / 2), rgba, name=f"{o.name}/top")
    o.surfaces.append(Surface(o.body, (0, 0, h), (d / 2, w / 2)))
    slot = (h - t - plinth) / n_drawers
    for k in range(n_drawers):
        z0 = plinth + k * slot
        dr = body.add_body(name=f"{o.name}/drawer{k}", pos=[0, 0, z0])
        jname = f"{o.name}/drawer{k}_slide"
        travel = 0.7 * (d - t)
        dr.add_joint(name=jname, type=mujoco.mjtJoint.mjJNT_SLIDE, axis=[1, 0, 0], range=[0, travel], damping=5.0,
                     frictionloss=0.5, armature=0.05)
        ih, iw, idp = slot - 0.03, w / 2 - t - 0.005, (d - t) / 2 - 0.01
        cx = t / 2
        _box(dr, (idp, iw, 0.006), (cx, 0, 0.006), _shade(rgba, 0.85), mass=0.8)
        for s in (-1, 1):
            _box(dr, (idp, 0.006, ih / 2), (cx, s * (iw - 0.006), ih / 2), _shade(rgba, 0.85), mass=0.3)
        _box(dr, (0.006, iw, ih / 2), (cx - idp + 0.006, 0, ih / 2), _shade(rgba, 0.85), mass=0.3)
        _box(dr, (0.01, w / 2 - 0.004, slot / 2 - 0.004), (d / 2 + 0.01, 0, slot / 2), _shade(rgba, 1.1), mass=0.6,
             name=f"{o.name}/drawer{k}_front")
        _handle(dr, f"{o.name}/drawer{k}", (d / 2 + 0.02, 0, slot / 2), vertical=False, length=0.18)
        o.cavities.append(Cavity(dr.name, (cx, 0, 0.012 + (ih - 0.012) / 2), (idp - 0.01, iw - 0.01, (ih - 0.012) / 2),
                                 closed_top=True))
        o.openables.append(Openable(jname, travel))


def _build_sink(body, o: SceneObject, size):
    d, w, h = size
    rgba = o.spec.rgba
    depth, bd, bw = 0.2, d * 0.55, w * 0.6
    zb = h - depth
    _box(body, (d / 2 - 0.02, w / 2, (zb - 0.02) / 2), (-0.02, 0, (zb - 0.02) / 2), _shade(rgba, 0.75))
    _box(body, (bd / 2, bw / 2, 0.01), (0, 0, zb - 0.01), _shade(rgba, 0.9))  # basin floor
    # Rim around the basin opening, up to the counter top.
    fx = (d / 2 - bd / 2) / 2
    for s in (-1, 1):
        _box(body, (fx, w / 2, depth / 2 + 0.01), (s * (bd / 2 + fx), 0, zb + depth / 2 - 0.01), rgba)
        _box(body, (bd / 2, (w - bw) / 4, depth / 2 + 0.01), (0, s * (bw / 2 + (w - bw) / 4), zb + depth / 2 - 0.01),
             rgba)
    _box(body, (0.02, 0.02, 0.12), (-bd / 2 - 0.05, 0, h + 0.12), (0.8, 0.8, 0.82, 1))  # faucet
    o.cavities.append(Cavity(o.body, (0, 0, zb + depth / 2), (bd / 2, bw / 2, depth / 2)))
    for s in (-1, 1):
        o.surfaces.append(Surface(o.body, (0, s * (bw / 2 + (w - bw) / 4), h), (d / 2 - 0.02, (w - bw) / 4)))


def _build_bookcase(body, o: SceneObject, size):
    _carcass(body, o, size, levels=3, plinth=0.05)


def _build_shelf(body, o: SceneObject, size):
    floors = _carcass(body, o, size, levels=2, plinth=0.05)
    d, w, _ = size
    for z, cav in zip(floors, o.cavities):
        o.surfaces.append(Surface(o.body, (cav.center[0], 0, z), (cav.half[0], cav.half[1]), clearance=2 * cav.half[2]))


def _build_rack(body, o: SceneObject, size):
    d, w, h = size
    rgba, t = o.spec.rgba, 0.02
    for s in (-1, 1):
        _box(body, (d / 2, t / 2, h / 2), (0, s * (w / 2 - t / 2), h / 2), rgba)
    levels = (0.06, h * 0.55, h)
    for k, z in enumerate(levels):
        _box(body, (d / 2, w / 2 - t, t / 2), (0, 0, z - t / 2), _shade(rgba, 0.9), name=f"{o.name}/board{k}")
        clear = (levels[k + 1] - z - t) if k + 1 < len(levels) else 10.0
        o.surfaces.append(Surface(o.body, (0, 0, z), (d / 2, w / 2 - t), clearance=clear))


def _build_bed(body, o: SceneObject, size):
    d, w, h = size
    _box(body, (d / 2, w / 2, (h - 0.15) / 2), (0, 0, (h - 0.15) / 2), _shade(o.spec.rgba, 0.6))
    _box(body, (d / 2 - 0.02, w / 2 - 0.02, 0.075), (0, 0, h - 0.075), o.spec.rgba, name=f"{o.name}/mattress")
    _box(body, (d / 2, 0.03, 0.4), (0, -w / 2 - 0.03, 0.4), _shade(o.spec.rgba, 0.5))  # headboard
    _box(body, (d / 2 - 0.15, 0.12, 0.05), (0, -w / 2 + 0.16, h + 0.05), (0.95, 0.95, 0.95, 1))  # pillow
    o.surfaces.append(Surface(o.body, (0, 0.1, h), (d / 2 - 0.02, w / 2 - 0.32)))


def _build_sofa(body, o: SceneObject, size):
    d, w, h = size
    rgba = o.spec.rgba
    seat_h, back_d, arm_w = 0.45, 0.2, 0.15
    _box(body, (d / 2, w / 2, seat_h / 2), (0, 0, seat_h / 2), rgba, name=f"{o.name}/seat")
    _box(body, (back_d / 2, w / 2, (h - seat_h) / 2), (-d / 2 + back_d / 2, 0, seat_h + (h - seat_h) / 2),
         _shade(rgba, 0.85))
    for s in (-1, 1):
        _box(body, (d / 2, arm_w / 2, 0.1), (0, s * (w / 2 - arm_w / 2), seat_h + 0.1), _shade(rgba, 0.85))
    o.surfaces.append(Surface(o.body, (back_d / 2, 0, seat_h), (d / 2 - back_d / 2, w / 2 - arm_w)))


def _build_chair(body, o: SceneObject, size):
    d, w, h = size
    rgba, seat = o.spec.rgba, 0.46
    _box(body, (d / 2, w / 2, 0.025), (0, 0, seat - 0.025), rgba, name=f"{o.name}/seat")
    for sx in (-1, 1):
        for sy in (-1, 1):
            _box(body, (0.02, 0.02, (seat - 0.05) / 2), (sx * (d / 2 - 0.03), sy * (w / 2 - 0.03), (seat - 0.05) / 2),
                 _shade(rgba, 0.8))
    _box(body, (0.02, w / 2, (h - seat) / 2), (-d / 2 + 0.02, 0, seat + (h - seat) / 2), rgba)
    o.surfaces.append(Surface(o.body, (0.02, 0, seat), (d / 2 - 0.04, w / 2)))


def _build_car(body, o: SceneObject, size):
    """The back of a car: a trunk (floor at 0.55 m) with a lid hinged at its far edge."""
    d, w, h = size
    rgba, t = o.spec.rgba, 0.03
    floor_z, rim = 0.55, 0.88
    _box(body, (d / 2, w / 2, (floor_z - 0.2) / 2), (0, 0, 0.2 + (floor_z - 0.2) / 2), _shade(rgba, 0.8))
    _box(body, (d / 2 - t, w / 2 - t, 0.01), (0, 0, floor_z + 0.01), (0.15, 0.15, 0.15, 1))  # trunk mat
    for s in (-1, 1):
        _box(body, (d / 2, t / 2, (rim - floor_z) / 2), (0, s * (w / 2 - t / 2), floor_z + (rim - floor_z) / 2), rgba)
        _box(body, (t / 2, w / 2, (rim - floor_z) / 2), (s * (d / 2 - t / 2), 0, floor_z + (rim - floor_z) / 2), rgba)
        for wx in (-1,):
            body.add_geom(type=_G.mjGEOM_CYLINDER, size=[0.32, 0.1, 0], pos=[wx * d / 4, s * (w / 2 - 0.05), 0.32],
                          quat=[0.7071068, 0.7071068, 0, 0], rgba=[0.1, 0.1, 0.1, 1], contype=1, conaffinity=6)
    cabin_d = 1.2
    _box(body, (cabin_d / 2, w / 2, (h + 0.45 - 0.2) / 2), (-d / 2 - cabin_d / 2, 0, 0.2 + (h + 0.45 - 0.2) / 2),
         rgba)
    lid = body.add_body(name=f"{o.name}/lid", pos=[-d / 2, 0, rim + 0.01])
    jname = f"{o.name}/lid_hinge"
    lid.add_joint(name=jname, type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, -1, 0], range=[0, 1.7], damping=3.0,
                  frictionloss=0.5, armature=0.1)
    _box(lid, (d / 2, w / 2, 0.015), (d / 2, 0, 0.015), _shade(rgba, 1.1), mass=5.0, name=f"{o.name}/lid_panel")
    _handle(lid, f"{o.name}/lid", (d - 0.02, 0, 0.0), vertical=False, length=0.3)
    o.openables.append(Openable(jname, 1.5))
    o.cavities.append(Cavity(o.body, (0, 0, (floor_z + 0.02 + rim) / 2), (d / 2 - t, w / 2 - t, (rim - floor_z) / 2)))


def _build_tree(body, o: SceneObject, size):
    d, _, h = size
    christmas = "christmas" in o.synset
    trunk_h = 0.35 if christmas else 0.9
    body.add_geom(type=_G.mjGEOM_CYLINDER, size=[0.06, trunk_h / 2, 0], pos=[0, 0, trunk_h / 2],
                  rgba=[0.4, 0.25, 0.12, 1], contype=COLLIDE_STATIC[0], conaffinity=COLLIDE_STATIC[1])
    crown = (h - trunk_h) / 2
    body.add_geom(name=f"{o.name}/crown", type=_G.mjGEOM_ELLIPSOID, size=[d / 2, d / 2, crown],
                  pos=[0, 0, trunk_h + crown], rgba=list(o.spec.rgba), contype=COLLIDE_STATIC[0],
                  conaffinity=COLLIDE_STATIC[1])


FIXTURE_BUILDERS = {
    "table": _build_table, "counter": _build_counter, "block": _build_block, "cabinet": _build_cabinet,
    "fridge": _build_fridge, "dishwasher": _build_dishwasher, "drawer_cabinet": _build_drawer_cabinet,
    "sink": _build_sink, "bookcase": _build_bookcase, "shelf": _build_shelf, "rack": _build_rack, "bed": _build_bed,
    "sofa": _build_sofa, "chair": _build_chair, "car": _build_car, "tree": _build_tree,
}


# ---------------------------------------------------------------------------------------------
# Free objects: local frame = centre of the bounding box
# ---------------------------------------------------------------------------------------------
def _build_free(world: mujoco.MjSpec, o: SceneObject, slot: int | None) -> None:
    spec = o.spec
    sx, sy, sz = spec.size
    body = world.worldbody.add_body(name=o.name, pos=[0, 0, -5.0 - 0.3 * slot if slot is not None else -5.0])
    o.body = body.name
    o.freejoint = f"{o.name}/free"
    body.add_freejoint(name=o.freejoint)
    o.half = (sx / 2, sy / 2, sz / 2)
    rgba = spec.rgba
    kind = spec.kind
    friction = [1.0, 0.01, 0.001]
    if kind == "container":
        t = min(0.012, 0.1 * min(sx, sy))
        tb = 0.01
        wall_m = spec.mass * 0.15
        _box(body, (sx / 2, sy / 2, tb / 2), (0, 0, -sz / 2 + tb / 2), _shade(rgba, 0.85), COLLIDE_OBJECT,
             name=f"{o.name}/floor", mass=spec.mass * 0.4, friction=friction)
        for s in (-1, 1):
            _box(body, (t / 2, sy / 2, sz / 2), (s * (sx / 2 - t / 2), 0, 0), rgba, COLLIDE_OBJECT, mass=wall_m,
                 friction=friction)
            _box(body, (sx / 2 - t, t / 2, sz / 2), (0, s * (sy / 2 - t / 2), 0), rgba, COLLIDE_OBJECT, mass=wall_m,
                 friction=friction)
        o.cavities.append(Cavity(o.body, (0, 0, tb / 2), (sx / 2 - t, sy / 2 - t, (sz - tb) / 2)))
        return
    if kind == "laptop":
        base_h = sz
        _box(body, (sx / 2, sy / 2, base_h / 2), (0, 0, 0), rgba, COLLIDE_OBJECT, name=f"{o.name}/base",
             mass=spec.mass * 0.6, friction=friction)
        _box(body, (sx / 2 - 0.02, sy / 2 - 0.02, 0.001), (0.0, 0, base_h / 2 + 0.001), (0.1, 0.1, 0.1, 1), VISUAL)
        lid = body.add_body(name=f"{o.name}/lid", pos=[-sx / 2, 0, base_h / 2])
        jname = f"{o.name}/lid_hinge"
        # closed = lid lying on the base (0); open = raised towards -x by up to 1.9 rad.
        lid.add_joint(name=jname, type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, -1, 0], range=[0, 1.9], damping=0.05,
                      frictionloss=0.01, armature=0.001)
        _box(lid, (sx / 2, sy / 2, 0.006), (sx / 2, 0, 0.007), _shade(rgba, 1.15), COLLIDE_OBJECT,
             name=f"{o.name}/lid_panel", mass=spec.mass * 0.4)
        o.openables.append(Openable(jname, 1.8))
        o.surfaces.append(Surface(o.body, (0, 0, base_h / 2 + 0.014), (sx / 2, sy / 2)))
        return
    if kind == "plate":
        if abs(sx - sy) < 1e-6:
            body.add_geom(name=f"{o.name}/geom", type=_G.mjGEOM_CYLINDER, size=[sx / 2, sz / 2, 0], rgba=list(rgba),
                          mass=spec.mass, contype=COLLIDE_OBJECT[0], conaffinity=COLLIDE_OBJECT[1], friction=friction)
        else:
            _box(body, (sx / 2, sy / 2, sz / 2), (0, 0, 0), rgba, COLLIDE_OBJECT, name=f"{o.name}/geom",
                 mass=spec.mass, friction=friction)
        o.surfaces.append(Surface(o.body, (0, 0, sz / 2), (sx / 2 * 0.85, sy / 2 * 0.85)))
        return
    # Items: one primitive.
    shape = spec.shape
    common = dict(name=f"{o.name}/geom", rgba=list(rgba), mass=spec.mass, contype=COLLIDE_OBJECT[0],
                  conaffinity=COLLIDE_OBJECT[1], friction=friction)
    if shape in ("cylinder", "sphere", "capsule_x", "ellipsoid"):
        # Rolling resistance (condim 6): without it a dropped can or ball rolls on for metres.
        common.update(condim=6, friction=[1.0, 0.01, 0.003])
    if shape == "cylinder":
        body.add_geom(type=_G.mjGEOM_CYLINDER, size=[min(sx, sy) / 2, sz / 2, 0], **common)
    elif shape == "sphere":
        r = min(sx, sy, sz) / 2
        o.half = (r, r, r)
        body.add_geom(type=_G.mjGEOM_SPHERE, size=[r, 0, 0], **common)
    elif shape == "ellipsoid":
        body.add_geom(type=_G.mjGEOM_ELLIPSOID, size=[sx / 2, sy / 2, sz / 2], **common)
    elif shape == "capsule_x":
        r = min(sy, sz) / 2
        o.half = (sx / 2, r, r)
        body.add_geom(type=_G.mjGEOM_CAPSULE, size=[r, max(sx / 2 - r, 0.001), 0], quat=[0.7071068, 0, 0.7071068, 0],
                      **common)
    else:
        _box(body, (sx / 2, sy / 2, sz / 2), (0, 0, 0), rgba, COLLIDE_OBJECT, **{k: v for k, v in common.items()
                                                                               if k not in ("rgba", "contype",
                                                                                            "conaffinity")})
    if spec.kind == "item" and shape in ("box",):
        o.surfaces.append(Surface(o.body, (0, 0, sz / 2), (sx / 2 * 0.9, sy / 2 * 0.9)))
    if spec.toggleable:
        # A push button on the top face: a spring-loaded slide joint, pressed down by a finger.
        bw = min(0.018, 0.25 * min(sx, sy))
        btn = body.add_body(name=f"{o.name}/button", pos=[0.25 * sx / 2, 0, sz / 2])
        jname = f"{o.name}/button_joint"
        btn.add_joint(name=jname, type=mujoco.mjtJoint.mjJNT_SLIDE, axis=[0, 0, 1], range=[-BUTTON_TRAVEL, 0],
                      stiffness=300.0, springref=0.0, damping=3.0, armature=0.01)
        _box(btn, (bw, bw, 0.01), (0, 0, 0.01), (0.9, 0.15, 0.1, 1), COLLIDE_OBJECT, name=f"{o.name}/button_geom",
             mass=0.01)
        o.button_joint = jname
        led = body.add_geom(name=f"{o.name}/led", type=_G.mjGEOM_SPHERE, size=[0.012, 0, 0],
                            pos=[-0.6 * sx / 2, 0, sz / 2], rgba=[0.1, 0.1, 0.1, 1], contype=0, conaffinity=0)
        o.led_geom = led.name


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------
def _room_regions(names: list[str]) -> dict[str, Room]:
    L = ROOM_EXTENT
    pi = math.pi
    n = len(names)
    if n == 1:
        shapes = [((-L, -L), (L, L), (-pi, pi))]
    elif n == 2:
        shapes = [((-L, -L), (L, 0.0), (-pi, 0.0)), ((-L, 0.0), (L, L), (0.0, pi))]
    elif n == 3:
        shapes = [((-L, -L), (L, 0.0), (-pi, 0.0)), ((0.0, 0.0), (L, L), (0.0, pi / 2)),
                  ((-L, 0.0), (0.0, L), (pi / 2, pi))]
    elif n == 4:
        shapes = [((0.0, -L), (L, 0.0), (-pi / 2, 0.0)), ((0.0, 0.0), (L, L), (0.0, pi / 2)),
                  ((-L, 0.0), (0.0, L), (pi / 2, pi)), ((-L, -L), (0.0, 0.0), (-pi, -pi / 2))]
    else:
        raise ValueError(f"{n} rooms ({', '.join(names)}): the embedded backend lays out at most 4 rooms")
    return {name: Room(name, lo, hi, ang) for name, (lo, hi, ang) in zip(names, shapes)}


def _footprint_corners(x, y, yaw, d, w):
    c, s = math.cos(yaw), math.sin(yaw)
    pts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            px, py = sx * d / 2, sy * w / 2
            pts.append((x + c * px - s * py, y + s * px + c * py))
    return pts


def _layout_fixtures(fixtures: list[SceneObject], rooms: dict[str, Room], rng: np.random.Generator) -> None:
    """Place fixtures on a ring around the origin, each inside its room, facing the origin."""
    if not fixtures:
        return
    for ring in np.arange(RING_NEAR, RING_NEAR + 2.0, 0.15):
        placed: list[tuple[float, float, float]] = []  # (angle, half_angle, radius)
        ok = True
        for o in fixtures:
            d, w, _ = o.spec.size
            room = rooms[o.room]
            # Tall furniture stays out from under the robot's hands (reset pose) so it can turn.
            r_near = ring + rng.uniform(0.0, 0.06) + (TALL_EXTRA if o.spec.size[2] > HANDS_LOW_Z - 0.06 else 0.0)
            if o.spec.kind == "drawer_cabinet":
                r_near += DRAWER_EXTRA  # room for the drawers to come out
            rc = r_near + d / 2
            half_ang = math.atan2(w / 2 + 0.08, r_near)
            candidates = np.deg2rad(np.arange(-180, 180, 5.0)) + rng.uniform(-0.04, 0.04)
            candidates = candidates[np.argsort(np.abs(candidates) + rng.uniform(0, 0.25, len(candidates)))]
            best = None
            for a in candidates:
                if any(abs(_wrap(a - pa)) < half_ang + ph for pa, ph, _ in placed):
                    continue
                x, y, yaw = rc * math.cos(a), rc * math.sin(a), a + math.pi
                if all(room.contains(px, py, 0.03) for px, py in _footprint_corners(x, y, yaw, d, w)):
                    best = (a, x, y, yaw)
                    break
            if best is None:
                ok = False
                break
            a, x, y, yaw = best
            placed.append((a, half_ang, rc))
            o.pose = (x, y, _wrap(yaw))
        if ok:
            return
    raise ValueError("could not lay out the furniture around the robot: "
                     + ", ".join(f"{o.name} ({o.room})" for o in fixtures))


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------
def _is_wildcard(instance: str) -> bool:
    return instance.endswith("_*")


def build_scene(world: mujoco.MjSpec, problem: Problem, instance_id: int, seed_salt: int = 0) -> Scene:
    """Add the problem's rooms, furniture and objects to `world`; returns the scene description."""
    rng = np.random.default_rng([instance_id, seed_salt])
    init = problem.init
    inroom = {lit[1]: lit[2] for lit in init if lit[0] == "inroom"}
    objects: dict[str, SceneObject] = {}
    for synset, insts in problem.objects.items():
        for inst in insts:
            spec = problem.overrides.get(inst) or resolve(synset)
            if spec.kind == "floor":
                role = "floor"
            elif spec.kind == "agent":
                role = "agent"
            elif spec.is_fixture:
                role = "fixture"
            else:
                role = "free"
            if role == "fixture":
                # Jitter furniture sizes a little per instance.
                spec = _jitter_size(spec, rng, 0.06)
            objects[inst] = SceneObject(inst, synset, spec, role, room=inroom.get(inst),
                                        adjective=problem.adjectives.get(inst, ""))

    # Rooms: the agent's floor's room first.
    agent_floor = next((lit[2] for lit in init if lit[0] == "ontop" and objects.get(lit[1]) is not None
                        and objects[lit[1]].role == "agent"), None)
    room_order: list[str] = []
    if agent_floor is not None and inroom.get(agent_floor):
        room_order.append(inroom[agent_floor])
    for lit in init:
        if lit[0] == "inroom" and lit[2] not in room_order and lit[1] in objects:
            room_order.append(lit[2])
    if not room_order:
        room_order = ["living_room"]
    rooms = _room_regions(room_order)
    agent_room = room_order[0]
    for o in objects.values():
        if o.role in ("floor",) and o.room is None:
            o.room = agent_room

    # Relations from :init (first argument placed relative to the second).
    relation_of: dict[str, tuple[str, str]] = {}
    for lit in init:
        if lit[0] in ("ontop", "inside", "under", "nextto") and lit[1] in objects and lit[2] in objects:
            if objects[lit[1]].role == "agent":
                continue
            relation_of.setdefault(lit[1], (lit[0], lit[2]))

    # Free containers and plates grow to hold what :init puts in/on them (~35 % of the area used).
    content: dict[str, float] = {}
    for child, (rel, parent) in relation_of.items():
        kind = objects[parent].spec.kind if objects[parent].role == "free" else None
        if (rel == "inside" and kind == "container") or (rel == "ontop" and kind == "plate"):
            cs = objects[child].spec.size
            content[parent] = content.get(parent, 0.0) + cs[0] * cs[1]
    for parent, area in content.items():
        o = objects[parent]
        sx, sy, sz = o.spec.size
        f = math.sqrt(area / 0.35 / (sx * sy))
        if f > 1.0:
            o.spec = replace(o.spec, size=(sx * min(f, 2.0), sy * min(f, 2.0), sz))

    # Fixtures not in any room sit on the floor of the room their support is in.
    for o in objects.values():
        if o.role == "fixture" and o.room is None:
            rel = relation_of.get(o.name)
            parent = objects.get(rel[1]) if rel else None
            o.room = parent.room if parent is not None and parent.room else agent_room
        if o.role == "fixture" and o.room not in rooms:
            o.room = agent_room
    # Free objects that are `inroom` but have no placement relation go onto that room's floor.
    room_floor = {}
    for o in objects.values():
        if o.role == "floor":
            room_floor.setdefault(o.room, o.name)

    fixtures = [o for o in objects.values() if o.role == "fixture"]
    # Largest first, so small pieces fill the gaps; shuffle equal sizes per instance.
    order = rng.permutation(len(fixtures))
    fixtures = [fixtures[i] for i in order]
    fixtures.sort(key=lambda o: -o.spec.size[1])
    _layout_fixtures(fixtures, rooms, rng)

    # Build rooms (visual floor regions) and furniture.
    wb = world.worldbody
    for room in rooms.values():
        cx, cy = (room.lo[0] + room.hi[0]) / 2, (room.lo[1] + room.hi[1]) / 2
        hx, hy = (room.hi[0] - room.lo[0]) / 2, (room.hi[1] - room.lo[1]) / 2
        rgba = ROOM_COLORS.get(room.name, (0.6, 0.6, 0.6, 1))
        wb.add_geom(name=f"room/{room.name}", type=_G.mjGEOM_BOX, size=[hx - 0.01, hy - 0.01, 0.001],
                    pos=[cx, cy, 0.0005], rgba=list(rgba), contype=0, conaffinity=0)
    for o in fixtures:
        x, y, yaw = o.pose
        body = wb.add_body(name=o.name, pos=[x, y, 0.0], quat=_yaw_quat(yaw))
        o.body = body.name
        FIXTURE_BUILDERS[o.spec.kind](body, o, o.spec.size)

    # Free objects.
    toggles = 0
    for k, o in enumerate(sorted((o for o in objects.values() if o.role == "free"), key=lambda o: o.name)):
        slot = None
        if o.spec.toggleable:
            slot = toggles
            toggles += 1
        _build_free(world, o, k)
        if o.spec.toggleable:
            o.toggle_slot = world.nuserdata + USERDATA_PER_TOGGLE * slot
    userdata_offset = world.nuserdata
    world.nuserdata = world.nuserdata + USERDATA_PER_TOGGLE * toggles

    placements = []
    for o in objects.values():
        if o.role != "free":
            continue
        rel = relation_of.get(o.name)
        if rel is None or objects[rel[1]].role == "agent":
            floor = room_floor.get(o.room or agent_room) or room_floor.get(agent_room)
            if floor is None:
                raise ValueError(f"{o.name}: no relation in :init places it and there is no floor to put it on")
            rel = ("ontop", floor)
        placements.append(Placement(o.name, rel[0], rel[1]))
    placements = _parents_first(placements, objects)

    init_open = {}
    init_toggled = {}
    for lit in init:
        neg = lit[0] == "not"
        atom = lit[1] if neg else lit
        if atom[0] in ("open", "closed") and atom[1] in objects:
            is_open = (atom[0] == "open") != neg
            init_open[atom[1]] = is_open
        if atom[0] == "toggled_on" and atom[1] in objects:
            init_toggled[atom[1]] = not neg
    return Scene(objects, rooms, agent_room, placements, init_open, init_toggled, userdata_offset, problem.reach,
                 dict(problem.regions))


def _jitter_size(spec: CategorySpec, rng, amount: float) -> CategorySpec:
    f = 1.0 + rng.uniform(-amount, amount, 3)
    f[2] = 1.0 + rng.uniform(-amount / 3, amount / 3)
    return replace(spec, size=tuple(float(s * k) for s, k in zip(spec.size, f)))


def _parents_first(placements: list[Placement], objects: dict[str, SceneObject]) -> list[Placement]:
    by_obj = {p.obj: p for p in placements}
    out, done, visiting = [], set(), set()

    def visit(p: Placement):
        if p.obj in done:
            return
        if p.obj in visiting:
            raise ValueError(f"circular placement in :init involving {p.obj}")
        visiting.add(p.obj)
        if p.parent in by_obj:
            visit(by_obj[p.parent])
        visiting.discard(p.obj)
        done.add(p.obj)
        out.append(p)

    # Big things first: they are the hardest to fit, and small things fill the gaps.
    for p in sorted(placements, key=lambda p: -objects[p.obj].spec.size[0] * objects[p.obj].spec.size[1]):
        visit(p)
    return out


# ---------------------------------------------------------------------------------------------
# Sampling initial states
# ---------------------------------------------------------------------------------------------
class SamplingError(RuntimeError):
    pass


@dataclass
class _Placed:
    pos: np.ndarray
    yaw: float
    lo: np.ndarray
    hi: np.ndarray
    zmax: float = -math.inf  # > pos[2]: may be stacked on what it overlaps, up to this centre height


def _aabb(pos, yaw, half):
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    hx = c * half[0] + s * half[1]
    hy = s * half[0] + c * half[1]
    h = np.array([hx, hy, half[2]])
    return pos - h, pos + h


def _frame(model, data, body_name: str, placed: dict[str, _Placed], objects: dict[str, SceneObject]):
    """World position and rotation of a body: sampled pose for free objects placed this episode."""
    if body_name in placed:
        p = placed[body_name]
        c, s = math.cos(p.yaw), math.sin(p.yaw)
        return p.pos, np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body_name)
    return data.xpos[bid].copy(), data.xmat[bid].reshape(3, 3).copy()


def _yaw_of(R) -> float:
    return math.atan2(R[1, 0], R[0, 0])


def _near_hands(p, robot_xy, ex, ey) -> bool:
    for hx, hy in HANDS_XY:
        dx, dy = abs(p[0] - robot_xy[0] - hx), abs(p[1] - robot_xy[1] - hy)
        if dx < ex + HANDS_R and dy < ey + HANDS_R:
            return True
    return False


class InitialStateSampler:
    """Places the free objects of a scene per :init; one instance per compiled model."""

    def __init__(self, scene: Scene, model: mujoco.MjModel):
        self.scene = scene
        self.model = model
        objs = scene.objects
        self.qpos_adr = {o.name: model.jnt_qposadr[model.joint(o.freejoint).id] for o in scene.free_objects()}
        self.dof_adr = {o.name: model.jnt_dofadr[model.joint(o.freejoint).id] for o in scene.free_objects()}
        self.joint_adr = {}
        for o in objs.values():
            for op in o.openables:
                j = model.joint(op.joint).id
                self.joint_adr[op.joint] = (model.jnt_qposadr[j], model.jnt_dofadr[j])
        # Fixture footprints (world AABBs in xy), to keep floor objects out of furniture.
        self.fixture_boxes = []
        for o in objs.values():
            if o.role == "fixture":
                x, y, yaw = o.pose
                d, w, h = o.spec.size
                pts = np.array(_footprint_corners(x, y, yaw, d + 0.1, w + 0.06))
                self.fixture_boxes.append((pts.min(0), pts.max(0), h, o))

    def sample(self, data: mujoco.MjData, rng: np.random.Generator, robot_xy=(0.0, 0.0), attempts: int = 100) -> None:
        model, scene = self.model, self.scene
        for o in scene.objects.values():
            for op in o.openables:
                qa, da = self.joint_adr[op.joint]
                is_open = scene.init_joint_state.get(o.name, False)
                data.qpos[qa] = op.open_value * rng.uniform(0.75, 1.0) if is_open else 0.0
                data.qvel[da] = 0.0
            if o.toggle_slot is not None:
                data.userdata[o.toggle_slot] = 1.0 if scene.init_toggled.get(o.name, False) else 0.0
                data.userdata[o.toggle_slot + 1] = 0.0
        for name, qa in self.qpos_adr.items():  # park everything out of the way first
            data.qpos[qa:qa + 7] = (0, 0, -10.0 - hash(name) % 97 * 0.3, 1, 0, 0, 0)
        mujoco.mj_kinematics(model, data)
        last = None
        for _ in range(attempts):
            try:
                placed = self._sample_once(data, rng, np.asarray(robot_xy, float))
                break
            except SamplingError as e:
                last = e
        else:
            raise SamplingError(f"could not place objects after {attempts} attempts: {last}")
        for name, p in placed.items():
            qa, da = self.qpos_adr[name], self.dof_adr[name]
            data.qpos[qa:qa + 3] = p.pos
            data.qpos[qa + 3:qa + 7] = (math.cos(p.yaw / 2), 0, 0, math.sin(p.yaw / 2))
            data.qvel[da:da + 6] = 0.0
        mujoco.mj_forward(model, data)

    # -- one attempt --------------------------------------------------------------------------
    def _sample_once(self, data, rng, robot_xy) -> dict[str, _Placed]:
        placed: dict[str, _Placed] = {}
        objs = self.scene.objects
        for p in self.scene.placements:
            o = objs[p.obj]
            parent = objs[p.parent]
            for _ in range(40):
                cand = self._propose(o, p.relation, parent, data, rng, robot_xy, placed)
                if cand is None:
                    continue
                if self._collides(o, cand, p, placed) and cand.zmax > cand.pos[2]:
                    cand = self._stack(cand, p, placed)  # crowded container: lay it on the others
                if cand is not None and not self._collides(o, cand, p, placed):
                    placed[o.name] = cand
                    break
            else:
                raise SamplingError(f"no room for ({p.relation} {p.obj} {p.parent})")
        return placed

    def _collides(self, o: SceneObject, cand: _Placed, p: Placement, placed: dict[str, _Placed]) -> bool:
        ancestors = self._ancestors(p)
        parent = self.scene.objects[p.parent]
        # Leave room for fingers between things on furniture and floors (not inside a container).
        gap = 0.0 if parent.role == "free" or p.relation == "inside" else SPACING
        pad = np.array([gap, gap, 0.0])
        for name, q in placed.items():
            if name in ancestors:
                continue
            if np.all(cand.lo - pad < q.hi - 0.002) and np.all(cand.hi + pad > q.lo + 0.002):
                return True
        return False

    def _ancestors(self, p: Placement) -> set[str]:
        by_obj = {q.obj: q for q in self.scene.placements}
        out, cur = set(), p.parent
        while cur is not None:
            out.add(cur)
            cur = by_obj[cur].parent if cur in by_obj else None
        return out

    def _stack(self, cand: _Placed, p: Placement, placed: dict[str, _Placed]) -> _Placed | None:
        skip = self._ancestors(p)
        under = [q for n, q in placed.items() if n not in skip and np.all(cand.lo[:2] < q.hi[:2])
                 and np.all(cand.hi[:2] > q.lo[:2]) and q.hi[2] > cand.lo[2]]
        if not under:
            return None
        lift = max(q.hi[2] for q in under) + 0.003 - cand.lo[2]
        if cand.pos[2] + lift > cand.zmax:
            return None
        dz = np.array([0, 0, lift])
        return _Placed(cand.pos + dz, cand.yaw, cand.lo + dz, cand.hi + dz, cand.zmax)

    def _orientations(self, o: SceneObject, base_yaw: float, rng, aligned: bool) -> float:
        if aligned:
            return base_yaw + rng.choice([0.0, math.pi / 2, math.pi, -math.pi / 2]) + rng.uniform(-0.05, 0.05)
        jitter = 0.4 if max(o.half[:2]) < 0.09 else 0.08  # big things stay square so more fits
        return base_yaw + rng.choice([0.0, math.pi / 2]) + rng.uniform(-jitter, jitter)

    def _propose(self, o, relation, parent, data, rng, robot_xy, placed) -> _Placed | None:
        half = np.array(o.half)
        model = self.model
        if relation == "ontop" and parent.role == "floor":
            room = self.scene.floor_room(parent.name)
            for k in range(30):
                r = rng.uniform(FLOOR_MIN_R + max(half[:2]), 1.25 + 0.025 * k)  # widen when crowded
                a = rng.uniform(*room.angles)
                if rng.uniform() > 0.35 + 0.325 * (1 + math.cos(a)):  # prefer in front of the robot
                    continue
                xy = robot_xy + r * np.array([math.cos(a), math.sin(a)])
                yaw = self._orientations(o, a, rng, aligned=False)
                pos = np.array([xy[0], xy[1], half[2] + 0.001])
                lo, hi = _aabb(pos, yaw, half)
                if not (room.contains(lo[0], lo[1], 0.02) and room.contains(hi[0], hi[1], 0.02)):
                    continue
                if any(np.all(lo[:2] < fhi) and np.all(hi[:2] > flo) for flo, fhi, _, _ in self.fixture_boxes):
                    continue
                return _Placed(pos, yaw, lo, hi)
            return None
        if relation in ("ontop", "inside"):
            if relation == "inside" and parent.cavities:
                region = parent.cavities[rng.integers(len(parent.cavities))]
                pos_l, R = _frame(model, data, region.body, placed, self.scene.objects)
                c = pos_l + R @ np.array(region.center)
                bottom = c[2] - region.half[2]
                hx, hy = region.half[0], region.half[1]
                clearance = 2 * region.half[2] if region.closed_top else 10.0
                aligned = True
            else:
                surfaces = parent.surfaces or []
                if not surfaces:
                    return None
                areas = np.array([s.half[0] * s.half[1] for s in surfaces])
                region = surfaces[rng.choice(len(surfaces), p=areas / areas.sum())]
                pos_l, R = _frame(model, data, region.body, placed, self.scene.objects)
                c = pos_l + R @ np.array(region.center)
                bottom = c[2]
                hx, hy = region.half
                clearance = region.clearance
                aligned = False
            base_yaw = _yaw_of(R)
            yaw = self._orientations(o, base_yaw, rng, aligned)
            rel_yaw = yaw - base_yaw
            cy_, sy_ = abs(math.cos(rel_yaw)), abs(math.sin(rel_yaw))
            ex, ey = cy_ * half[0] + sy_ * half[1], sy_ * half[0] + cy_ * half[1]
            if ex > hx + 1e-6 or ey > hy + 1e-6:
                # Try the other alignment before giving up.
                yaw = yaw + math.pi / 2
                ex, ey = ey, ex
                if ex > hx + 1e-6 or ey > hy + 1e-6:
                    if relation == "inside" or parent.role != "free":
                        return None
                    # A keyboard on a notebook: overhang, centre of mass over the support.
                    ex, ey = min(ex, 0.7 * hx), min(ey, 0.7 * hy)
            if 2 * half[2] > clearance:
                return None
            tall = bottom + 2 * half[2] > HANDS_LOW_Z
            area = self.scene.regions.get(o.name)
            if area is not None:  # inside its rectangle, and on the support
                (ax, ay), (rx, ry) = area
                wp = np.array([ax + rng.uniform(-rx, rx), ay + rng.uniform(-ry, ry), c[2]])
                lx, ly, _ = R.T @ (wp - c)
                if abs(lx) > hx - ex + 1e-9 or abs(ly) > hy - ey + 1e-9:
                    return None
            else:
                # Prefer the part of the support the robot can reach from its start, clear of its hands.
                for _ in range(25):
                    lx, ly = rng.uniform(-(hx - ex), hx - ex), rng.uniform(-(hy - ey), hy - ey)
                    wp = c + R @ np.array([lx, ly, 0.0])
                    near = np.linalg.norm(wp[:2] - robot_xy) <= self.scene.reach
                    if near and not (tall and _near_hands(wp, robot_xy, ex, ey)):
                        break
                else:
                    if tall and _near_hands(wp, robot_xy, ex, ey):
                        return None
            pos = np.array([wp[0], wp[1], bottom + half[2] + 0.002])
            lo, hi = _aabb(pos, yaw, half)
            zmax = -math.inf
            if relation == "inside" and parent.cavities and not region.closed_top:
                zmax = c[2] + region.half[2]  # centre no higher than the rim
            return _Placed(pos, yaw, lo, hi, zmax)
        if relation == "under":
            if parent.role == "fixture":
                x, y, pyaw = parent.pose
                d, w, h = parent.spec.size
                if h < 2 * half[2] + 0.05:
                    return None
                lx, ly = rng.uniform(-d / 2 + 0.08 + half[0], d / 2 - 0.08 - half[0]), \
                    rng.uniform(-w / 2 + 0.08 + half[1], w / 2 - 0.08 - half[1])
                c, s = math.cos(pyaw), math.sin(pyaw)
                pos = np.array([x + c * lx - s * ly, y + s * lx + c * ly, half[2] + 0.001])
                yaw = pyaw + rng.uniform(-0.1, 0.1)
                lo, hi = _aabb(pos, yaw, half)
                return _Placed(pos, yaw, lo, hi)
            return None
        if relation == "nextto":
            if parent.name in placed:
                q = placed[parent.name]
                base_z = q.lo[2]
                center = q.pos
                phalf = (q.hi - q.lo) / 2
            elif parent.role == "fixture":
                x, y, pyaw = parent.pose
                d, w, h = parent.spec.size
                center = np.array([x, y, h / 2])
                pts = np.array(_footprint_corners(x, y, pyaw, d, w))
                phalf = np.array([*(pts.max(0) - pts.min(0)) / 2, h / 2])
                base_z = 0.0
            else:
                return None
            a = rng.uniform(-math.pi, math.pi)
            dirv = np.array([math.cos(a), math.sin(a)])
            yaw = rng.uniform(-math.pi, math.pi)
            lo0, hi0 = _aabb(np.zeros(3), yaw, half)
            # Step out along dirv until the AABBs are 1-3 cm apart.
            gap = rng.uniform(0.01, 0.03)
            tx = (phalf[0] + hi0[0] + gap) / max(abs(dirv[0]), 1e-6)
            ty = (phalf[1] + hi0[1] + gap) / max(abs(dirv[1]), 1e-6)
            t = min(tx, ty)
            xy = center[:2] + t * dirv
            pos = np.array([xy[0], xy[1], base_z + half[2] + 0.002])
            lo, hi = _aabb(pos, yaw, half)
            if base_z < 0.01:
                if np.linalg.norm(xy - robot_xy) < FLOOR_MIN_R:
                    return None
                for flo, fhi, _, fo in self.fixture_boxes:
                    if fo is not parent and np.all(lo[:2] < fhi) and np.all(hi[:2] > flo):
                        return None
            return _Placed(pos, yaw, lo, hi)
        return None
