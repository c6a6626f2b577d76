"""BDDL predicates on MuJoCo state, and goal evaluation through bddl's own machinery.

`MujocoState` answers the kinematic predicates of BEHAVIOR's OmniGibson domain from body poses,
geom bounding boxes and contacts (`data.contact`), following OmniGibson's definitions closely
enough to mean the same thing:

- `touching(a, b)`: a contact between a geom of `a` and one of `b` (MuJoCo's own contact set, or a
  geom distance under 3 mm for pairs the simulator never collides, such as furniture on furniture).
- `ontop(a, b)`: touching, with `b` supporting `a` from below (a contact normal within ~53 deg of
  vertical). On a floor: resting on the ground inside that floor's room.
- `inside(a, b)`: the centre of `a`'s bounding box lies inside one of `b`'s cavities (a container's
  or a drawer's inner box, a cabinet compartment, a shelf level, a trunk); without cavities, inside
  a free `b`'s bounding box (furniture without compartments contains nothing).
- `nextto(a, b)`: OmniGibson's rule: the distance between the two bounding boxes is at most 1/6 of
  their mean extent, and they overlap in height (so objects on top of each other are not "next to").
- `under(a, b)`: some geom of `b` (a table top, a tree's crown) covers `a`'s centre from above.
- `open(a)` / `closed(a)`: any door, lid or drawer joint of `a` beyond 5 % of its range
  (OmniGibson's threshold).
- `toggled_on(a)`: a latched state flipped by each press of `a`'s button (kept in `data.userdata`).
- `grasped(agent, a)`: `a` touches both fingers of one gripper.

`BDDLGoal` compiles an activity's `:goal` (and `:init`) with `bddl.activity.get_goal_conditions`,
so quantifiers (`forall`, `exists`, `forn`, `forpairs`, `fornpairs`), `or`, `not` and `imply` are
evaluated by bddl itself on top of these predicates.
"""

from __future__ import annotations

import contextlib
import io

import mujoco
import numpy as np
from bddl.backend_abc import BDDLBackend
from bddl.logic_base import BinaryAtomicFormula, UnaryAtomicFormula

from behavior_gym.tasks.scene_builder import BUTTON_TRAVEL, Scene

GROUND = -2
OPEN_FRACTION = 0.05  # OmniGibson's joint-fraction threshold for `open`
TOUCH_DISTANCE = 0.003
FINGERS = {"left": ("left_finger1", "left_finger2"), "right": ("right_finger1", "right_finger2")}
LED_ON, LED_OFF = (0.1, 0.95, 0.2, 1.0), (0.1, 0.1, 0.1, 1.0)

SUPPORTED_PREDICATES = ("ontop", "inside", "nextto", "under", "touching", "open", "closed", "toggled_on", "grasped")


class MujocoState:
    """Predicate answers for one scene in one compiled model; call `update(data)` once per step."""

    def __init__(self, scene: Scene, model: mujoco.MjModel):
        self.scene = scene
        self.model = model
        self.data: mujoco.MjData | None = None
        self._time: float | None = None  # data.time at the last update
        self.names = list(scene.objects)
        self.index = {n: i for i, n in enumerate(self.names)}
        n_obj = len(self.names)
        self.geom2obj = np.full(model.ngeom, -1, dtype=np.int64)
        top_level = {}
        for i, name in enumerate(self.names):
            o = scene.objects[name]
            if o.body is not None:
                top_level[model.body(o.body).id] = i
        body_obj = np.full(model.nbody, -1, dtype=np.int64)
        for b in range(model.nbody):
            root = model.body_rootid[b]
            if root in top_level:
                body_obj[b] = top_level[root]
        self.agent = next((i for i, n in enumerate(self.names) if scene.objects[n].role == "agent"), None)
        robot_root = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "base_link")
        for g in range(model.ngeom):
            b = model.geom_bodyid[g]
            if body_obj[b] >= 0:
                self.geom2obj[g] = body_obj[b]
            elif b == 0 and model.geom_type[g] == mujoco.mjtGeom.mjGEOM_PLANE:
                self.geom2obj[g] = GROUND
            elif robot_root >= 0 and model.body_rootid[b] == robot_root and self.agent is not None:
                self.geom2obj[g] = self.agent
        self.finger_geoms = {}
        for arm, (f1, f2) in FINGERS.items():
            ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f) for f in (f1, f2)]
            if min(ids) >= 0:
                self.finger_geoms[arm] = ids
        # Geoms that count for an object's extent: everything it has that collides.
        visible = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
        self.obj_geoms = [np.flatnonzero((self.geom2obj == i) & visible) for i in range(n_obj)]
        self.tracked = np.flatnonzero((self.geom2obj >= 0) & visible)
        self._geom_row = np.full(model.ngeom, -1, dtype=np.int64)  # geom id -> its row in the tracked boxes
        self._geom_row[self.tracked] = np.arange(len(self.tracked))
        self.static = np.array([scene.objects[n].role == "fixture" for n in self.names])
        self.openable_adr = {}
        for i, name in enumerate(self.names):
            o = scene.objects[name]
            adrs = []
            for op in o.openables:
                j = model.joint(op.joint).id
                adrs.append((model.jnt_qposadr[j], op.open_value))
            self.openable_adr[i] = adrs
        self.buttons = []
        for name in self.names:
            o = scene.objects[name]
            if o.button_joint is not None:
                j = model.joint(o.button_joint).id
                led = model.geom(o.led_geom).id if o.led_geom else -1
                self.buttons.append((model.jnt_qposadr[j], o.toggle_slot, led))
        self._memo: dict = {}
        self._aabb = None  # (object lo, object hi, tracked geom lo, tracked geom hi) of this step, when computed
        self._contacts = None

    # -- per-step refresh ---------------------------------------------------------------------
    def update(self, data: mujoco.MjData) -> None:
        self.data = data
        self._time = data.time
        self._memo.clear()
        self._aabb = None
        self._contacts = None
        self._update_toggles(data)

    def refresh(self, data: mujoco.MjData) -> None:
        """`update`, unless this state was already updated to `data` at its simulation time (as by the
        backend's goal check after the same control step): the per-step boxes are then kept, not
        recomputed. Code that moves bodies without stepping time (teleports, resets) calls `update`."""
        if data is not self.data or data.time != self._time:
            self.update(data)

    def _update_toggles(self, data) -> None:
        for qadr, slot, led in self.buttons:
            q = data.qpos[qadr]
            state, latch = data.userdata[slot], data.userdata[slot + 1]
            if q < -0.6 * BUTTON_TRAVEL and latch < 0.5:
                data.userdata[slot] = 1.0 - state
                data.userdata[slot + 1] = 1.0
            elif q > -0.3 * BUTTON_TRAVEL:
                data.userdata[slot + 1] = 0.0
            if led >= 0:
                self.model.geom_rgba[led] = LED_ON if data.userdata[slot] > 0.5 else LED_OFF

    def _compute_aabbs(self):
        m, d = self.model, self.data
        g = self.tracked
        R = d.geom_xmat[g].reshape(-1, 3, 3)
        c_local = m.geom_aabb[g, :3]
        h_local = m.geom_aabb[g, 3:]
        center = d.geom_xpos[g] + np.einsum("nij,nj->ni", R, c_local)
        half = np.einsum("nij,nj->ni", np.abs(R), h_local)
        lo, hi = center - half, center + half
        n = len(self.names)
        olo = np.full((n, 3), np.inf)
        ohi = np.full((n, 3), -np.inf)
        owner = self.geom2obj[g]
        np.minimum.at(olo, owner, lo)
        np.maximum.at(ohi, owner, hi)
        self._aabb = (olo, ohi, lo, hi)

    def aabb(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._aabb is None:
            self._compute_aabbs()
        return self._aabb[0][i], self._aabb[1][i]

    def geom_aabb(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """World-frame box of tracked geom `g` at this step (computed with the objects' boxes)."""
        if self._aabb is None:
            self._compute_aabbs()
        row = self._geom_row[int(g)]
        if row < 0:
            raise KeyError(f"geom {int(g)} belongs to no tracked object (or has no collision)")
        return self._aabb[2][row], self._aabb[3][row]

    def _contact_map(self) -> dict:
        """(a, b) -> list of contact normals pointing from a to b, for objects (and GROUND)."""
        if self._contacts is not None:
            return self._contacts
        d = self.data
        out: dict[tuple[int, int], list[np.ndarray]] = {}
        n = d.ncon
        if n:
            g1 = d.contact.geom1[:n]
            g2 = d.contact.geom2[:n]
            o1, o2 = self.geom2obj[g1], self.geom2obj[g2]
            normals = d.contact.frame[:n, :3]
            dist = d.contact.dist[:n]
            for k in np.flatnonzero((o1 != o2) & ((o1 >= 0) | (o2 >= 0)) & (o1 != -1) & (o2 != -1)
                                    & (dist <= TOUCH_DISTANCE)):
                a, b = int(o1[k]), int(o2[k])
                out.setdefault((a, b), []).append(normals[k])
                out.setdefault((b, a), []).append(-normals[k])
        self._contacts = out
        return out

    def _geom_distance(self, i: int, j: int, limit: float = 0.01) -> float:
        best = limit
        fromto = np.zeros(6)
        for gi in self.obj_geoms[i]:
            for gj in self.obj_geoms[j]:
                if not self._aabbs_near(gi, gj, limit):
                    continue
                best = min(best, mujoco.mj_geomDistance(self.model, self.data, int(gi), int(gj), limit, fromto))
        return best

    def _aabbs_near(self, gi, gj, tol) -> bool:
        ai, aj = self.geom_aabb(gi), self.geom_aabb(gj)
        return bool(np.all(ai[0] <= aj[1] + tol) and np.all(aj[0] <= ai[1] + tol))

    # -- helpers ------------------------------------------------------------------------------
    def _obj(self, i: int):
        return self.scene.objects[self.names[i]]

    def is_floor(self, i: int) -> bool:
        return self._obj(i).role == "floor"

    def in_room(self, i: int, floor: int) -> bool:
        lo, hi = self.aabb(i)
        c = (lo + hi) / 2
        return self.scene.floor_room(self.names[floor]).contains(c[0], c[1])

    def on_ground(self, i: int) -> bool:
        normals = self._contact_map().get((GROUND, i))
        if normals:
            return any(nrm[2] > 0.6 for nrm in normals)
        if self.static[i]:
            return bool(self.aabb(i)[0][2] < 0.02)
        return False

    # -- predicates ---------------------------------------------------------------------------
    def evaluate(self, predicate: str, *objs: int) -> bool:
        key = (predicate, *objs)
        if key not in self._memo:
            self._memo[key] = bool(getattr(self, predicate)(*objs))
        return self._memo[key]

    def touching(self, a: int, b: int) -> bool:
        if a == b:
            return False
        if self.is_floor(b):
            return self.on_ground(a) and self.in_room(a, b) if not self.is_floor(a) else False
        if self.is_floor(a):
            return self.touching(b, a)
        if (a, b) in self._contact_map():
            return True
        return self._geom_distance(a, b) <= TOUCH_DISTANCE

    def ontop(self, a: int, b: int) -> bool:
        if a == b or self.is_floor(a):
            return False
        if self.is_floor(b):
            return self.on_ground(a) and self.in_room(a, b)
        normals = self._contact_map().get((b, a))
        if normals:
            return any(nrm[2] > 0.6 for nrm in normals)
        # No simulated contact (e.g. furniture on furniture): touching, and above.
        if self._geom_distance(a, b) > TOUCH_DISTANCE:
            return False
        alo, ahi = self.aabb(a)
        blo, bhi = self.aabb(b)
        c = (alo + ahi) / 2
        return bool(alo[2] >= bhi[2] - 0.02 and blo[0] <= c[0] <= bhi[0] and blo[1] <= c[1] <= bhi[1])

    def inside(self, a: int, b: int) -> bool:
        if a == b or self.is_floor(a) or self.is_floor(b) or b == self.agent:
            return False
        alo, ahi = self.aabb(a)
        c = (alo + ahi) / 2
        height = ahi[2] - alo[2]
        cavities = self._obj(b).cavities
        if cavities:
            d = self.data
            for cav in cavities:
                bid = self.model.body(cav.body).id
                R = d.xmat[bid].reshape(3, 3)
                local = R.T @ (c - d.xpos[bid]) - np.asarray(cav.center)
                h = np.asarray(cav.half)
                top = h[2] + (0.01 if cav.closed_top else 0.3 * height)
                if abs(local[0]) <= h[0] + 0.01 and abs(local[1]) <= h[1] + 0.01 and -h[2] - 0.02 <= local[2] <= top:
                    return True
            return False
        if self.static[b]:
            return False  # furniture without compartments (a table, a bed) holds nothing inside
        blo, bhi = self.aabb(b)
        return bool(np.all(c >= blo) and np.all(c <= bhi) and np.all(alo >= blo - 0.01) and np.all(ahi <= bhi + 0.01))

    def nextto(self, a: int, b: int) -> bool:
        if a == b or self.is_floor(a) or self.is_floor(b):
            return False
        alo, ahi = self.aabb(a)
        blo, bhi = self.aabb(b)
        gap = np.maximum(0.0, np.maximum(alo, blo) - np.minimum(ahi, bhi))
        mean_extent = np.mean((ahi - alo) + (bhi - blo))
        if np.linalg.norm(gap) > max(mean_extent / 6.0, 0.02):
            return False
        z_overlap = min(ahi[2], bhi[2]) - max(alo[2], blo[2])
        return bool(z_overlap > 0.005)

    def under(self, a: int, b: int) -> bool:
        if a == b or self.is_floor(a) or self.is_floor(b):
            return False
        alo, ahi = self.aabb(a)
        c = (alo + ahi) / 2
        for g in self.obj_geoms[b]:
            glo, ghi = self.geom_aabb(g)
            if glo[0] <= c[0] <= ghi[0] and glo[1] <= c[1] <= ghi[1] and glo[2] >= ahi[2] - 0.01:
                return not self.inside(a, b)
        return False

    def open(self, a: int) -> bool:
        q = self.data.qpos
        return any(abs(q[adr]) > OPEN_FRACTION * abs(full) for adr, full in self.openable_adr.get(a, ()))

    def closed(self, a: int) -> bool:
        return not self.open(a)

    def toggled_on(self, a: int) -> bool:
        slot = self._obj(a).toggle_slot
        return slot is not None and self.data.userdata[slot] > 0.5

    def grasped(self, agent: int, a: int) -> bool:
        if not self.finger_geoms:
            return False
        d = self.data
        n = d.ncon
        mine = set(self.obj_geoms[a].tolist()) | set(np.flatnonzero(self.geom2obj == a).tolist())
        for f1, f2 in self.finger_geoms.values():
            hit = set()
            for k in range(n):
                g1, g2 = int(d.contact.geom1[k]), int(d.contact.geom2[k])
                if g1 in (f1, f2) and g2 in mine:
                    hit.add(g1)
                elif g2 in (f1, f2) and g1 in mine:
                    hit.add(g2)
            if len(hit) == 2:
                return True
        return False


# ---------------------------------------------------------------------------------------------
# bddl backend
# ---------------------------------------------------------------------------------------------
class SimObject:
    """What bddl's scope maps an object name to."""

    def __init__(self, name: str, index: int):
        self.name = name
        self.index = index

    def __repr__(self) -> str:
        return f"SimObject({self.name!r})"


class _Unary(UnaryAtomicFormula):
    def _evaluate(self, obj):
        return self.backend.state.evaluate(self.STATE_NAME, obj.index)

    def _sample(self, obj, binary_state):
        raise NotImplementedError("sampling happens in scene_builder")


class _Binary(BinaryAtomicFormula):
    def _evaluate(self, obj1, obj2):
        return self.backend.state.evaluate(self.STATE_NAME, obj1.index, obj2.index)

    def _sample(self, obj1, obj2, binary_state):
        raise NotImplementedError("sampling happens in scene_builder")


def _predicate_class(name: str, arity: int):
    base = _Unary if arity == 1 else _Binary
    return type(f"{name.title().replace('_', '')}Predicate", (base,), {"STATE_NAME": name})


PREDICATE_CLASSES = {
    **{n: _predicate_class(n, 1) for n in ("open", "closed", "toggled_on")},
    **{n: _predicate_class(n, 2) for n in ("ontop", "inside", "nextto", "under", "touching", "grasped")},
}


class MujocoBDDLBackend(BDDLBackend):
    """bddl backend whose predicates read a `MujocoState`."""

    def __init__(self, state: MujocoState | None = None):
        self.state = state

    def get_predicate_class(self, predicate_name):
        return PREDICATE_CLASSES[predicate_name]  # KeyError -> bddl's UnsupportedPredicateError


def sexpr(term) -> str:
    """A parsed BDDL term back to its s-expression text."""
    if isinstance(term, list):
        return "(" + " ".join(sexpr(t) for t in term) + ")"
    return str(term)


class BDDLGoal:
    """Compiled goal (and initial) conditions of one problem, bound to a `MujocoState`."""

    def __init__(self, conds, state: MujocoState, init_literals: list | None = None):
        from bddl.activity import get_goal_conditions, get_ground_goal_state_options
        from bddl.condition_evaluation import compile_state

        self.state = state
        self.backend = MujocoBDDLBackend(state)
        self.scope = {name: SimObject(name, i) for i, name in enumerate(state.names)}
        object_map = {k: [x for x in v if x in self.scope] for k, v in conds.parsed_objects.items()}
        self.object_map = object_map
        self.conds = conds
        with contextlib.redirect_stdout(io.StringIO()):
            saved = conds.parsed_objects
            conds.parsed_objects = object_map
            try:
                self.goal = get_goal_conditions(conds, self.backend, self.scope)
                self.ground_options = get_ground_goal_state_options(conds, self.backend, self.scope, self.goal)
            finally:
                conds.parsed_objects = saved
        self.goal_text = [sexpr(c) for c in conds.parsed_goal_conditions]
        self.init_literals = init_literals or []
        with contextlib.redirect_stdout(io.StringIO()):
            self.init = compile_state(self.init_literals, self.backend, scope=self.scope, object_map=object_map,
                                      generate_ground_options=False) if self.init_literals else []
        self.init_text = [sexpr(c) for c in self.init_literals]

    def evaluate(self) -> tuple[list[str], list[str], float]:
        """(satisfied, unsatisfied, best ground-option fraction) on the state's current data."""
        sat, unsat = [], []
        for text, cond in zip(self.goal_text, self.goal):
            (sat if cond.evaluate() else unsat).append(text)
        best = 0.0
        for option in self.ground_options:
            ok = sum(1 for lit in option if lit.evaluate())
            best = max(best, ok / max(len(option), 1))
        return sat, unsat, best

    def failing_initial(self) -> list[str]:
        return [text for text, cond in zip(self.init_text, self.init) if not cond.evaluate()]

