"""Experts for the four skill tasks."""

from __future__ import annotations

import math

import numpy as np

from behavior_gym.experts.base import ARM, STANDOFF, TORSO, ExpertFailure, ScriptedExpert
from behavior_gym.experts.ik import grasp_rotation


def _first(task, synset_prefix: str) -> str:
    return next(n for n in task.scene.objects if n.startswith(synset_prefix))


def _free(task) -> list[str]:
    return [o.name for o in task.scene.objects.values() if o.role == "free"]


class _SkillExpert(ScriptedExpert):
    """Skill experts shaped for cloning: one arm, one IK mode, a base that drives visibly to the end,
    and (`always_standoff`) every reach made from the same spot relative to the object.

    It grasps with one arm, `ARM`, wherever the object lies. Choosing the arm by the object's side,
    as `ScriptedExpert` does, makes the demonstrations bimodal: two 7-joint motions whose choice
    hangs on a few pixels of the object's position. An OFT policy decodes every joint's token
    independently, so where it is unsure of the side, each arm's most likely token is "stay": the
    clone raised neither arm to a grasp (0 % on pick_and_place, while open_drawer, always done with
    the left arm, reached 50-80 %).

    `always_standoff` (default): before each pick and each place the base drives (and turns) until
    the point sits at the standoff in front of the arm's shoulder (`ScriptedExpert.approach`), so
    the arm's joint targets hardly vary between episodes and the part that varies is the base's
    drive, a closed-loop motion towards what the cameras see. Its state clone succeeds 17 % against
    6 % when the robot reaches from wherever it stands (`benchmarks/bc_clonability.py --arms
    standoff` vs `one`, 200 demonstrations, assisted grasping). With `always_standoff = False` it
    keeps the base still when the arm reaches from where it stands (the experts of runs 3-5). It is on
    for the "mobile" skill layout and off for "tabletop", where every object starts within the left
    arm's reach, so the base never moves."""

    ARM = "left"
    always_standoff = True  # per instance: set from the task's layout in __init__
    # Where it drives, it does so at a visible speed to the end (no creeping final centimetres).
    drive_min_speed = 0.12
    turn_min_speed = 0.3
    # One IK mode, torso free: trying the arm alone first switched between two postures (torso
    # upright or leaning) by whether the object lay a few millimetres inside the arm's reach, so
    # nearby objects got very different joint targets, which a clone cannot tell apart.
    torso_locks = (False,)

    def arm_for(self, p) -> str:
        return self.ARM

    # Metres: each standoff is drawn around the nominal one (sideways +-this, forward and back half of
    # it), so that demonstrations show the arm adjusting to an object that is not quite where the
    # drive should have put it (a clone's drive ends a few centimetres off). 0: always the nominal.
    standoff_jitter = 0.0
    # False: a place whose target the arm reaches from where the pick left the robot is made from
    # there (no carry drive); True: from the standoff, like every pick.
    place_from_standoff = True

    def __init__(self, env):
        super().__init__(env)
        self.always_standoff = getattr(self.task, "layout", None) != "tabletop"

    def approach(self, p, arm: str, **kwargs):
        if self.standoff_jitter > 0:
            j = self.standoff_jitter
            kwargs.setdefault("x_des", STANDOFF[0] + self.rng.uniform(-j / 2, j / 2))
            kwargs.setdefault("y_des", STANDOFF[1] + self.rng.uniform(-j, j))
        if self.holding is not None and not self.place_from_standoff and self._reachable(arm, p):
            return  # put it down from where the pick left the robot
        if self.always_standoff or not self._reachable(arm, p):
            yield from super().approach(p, arm, **kwargs)

    def grasp_yaw(self, name: str) -> float:
        # A square footprint can be taken across either pair of sides: the turn nearest the heading
        # keeps the hand within the yaws `_reachable` checks.
        g, long_half, short_half = self.footprint(name)
        if long_half > 1.1 * short_half:
            return super().grasp_yaw(name)
        byaw = self.base_pose()[2]
        return byaw + (g - byaw + math.pi / 4) % (math.pi / 2) - math.pi / 4

    def _reachable(self, arm: str, p, above=(0.0, 0.1, 0.2), tol: float = 0.008) -> bool:
        """Whether `arm` reaches `p` and the points `above` it from here, fingers down, with the hand
        turned any way within +-45 deg of the robot's heading (a held object hangs below the hand,
        which comes down from above; the grasp decides the hand's yaw later)."""
        q0 = np.concatenate([self.cmd[TORSO], self.cmd[ARM[arm]]])
        byaw = self.base_pose()[2]
        for z in above:
            target = np.asarray(p, float) + (0.0, 0.0, z)
            for yaw in byaw + np.array([-0.25, 0.0, 0.25]) * math.pi:
                if min(self.ik[arm].solve(self.data, target, grasp_rotation(yaw, pitch, byaw), q0=q0, restarts=1)[1]
                       for pitch in (0.0, 0.25, 0.5)) > tol:
                    return False
        return True


def place_floor(target: str, lo: np.ndarray, hi: np.ndarray) -> float:
    """Where a placed object's bottom goes on `target` (its world box `lo`, `hi`): just above a
    bowl's floor, on a plate's top."""
    return float(lo[2] + (0.012 if target.startswith("bowl") else hi[2] - lo[2]))


class PickAndPlaceExpert(_SkillExpert):
    """Pick the object and put it in the bowl / on the plate."""

    def script(self):
        objs = _free(self.task)
        target = next(n for n in objs if n.startswith(("bowl", "plate")))
        obj = next(n for n in objs if n != target)
        yield from self.pick(obj, then=self.center(target))
        tlo, thi = self.aabb(target)
        yield from self.place_at(((tlo + thi) / 2)[:2], place_floor(target, tlo, thi))
        yield from self.wait(10)


class StackingExpert(_SkillExpert):
    """Pick cube 1 and put it on cube 2."""

    def script(self):
        top, bottom = "cube.n.05_1", "cube.n.05_2"
        yield from self.pick(top, then=self.center(bottom))
        blo, bhi = self.aabb(bottom)
        yaw = self.body_yaw(bottom)
        # Align the held cube's faces with the lower cube's.
        _, _, gyaw = self.holding
        rel = (yaw - gyaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
        # Of the cube's four matching turns, the one that leaves the hand nearest the robot's heading.
        byaw = self.base_pose()[2]
        rel = min((rel + k * math.pi / 2 for k in range(-2, 3)),
                  key=lambda r: abs((gyaw + r - byaw + math.pi) % (2 * math.pi) - math.pi))
        yield from self.place_at(((blo + bhi) / 2)[:2], bhi[2], yaw=gyaw + rel, drop=0.004)
        yield from self.wait(10)


class RearrangementExpert(_SkillExpert):
    """Pick the first object and set it down right next to the second."""

    def script(self):
        objs = [n for n in _free(self.task)]
        # The goal is (nextto A B): A is the first object of the problem file.
        goal = self.task.conds.parsed_goal_conditions[0]
        a, b = goal[1].lstrip("?"), goal[2].lstrip("?")
        assert a in objs and b in objs
        alo, ahi = self.aabb(a)
        yield from self.pick(a, then=self.center(b))
        blo, bhi = self.aabb(b)
        bc = (blo + bhi) / 2
        ac = (alo + ahi) / 2
        # Put A beside B, on the side A came from (towards the robot if that is ambiguous).
        d = ac[:2] - bc[:2]
        d /= np.linalg.norm(d) + 1e-9
        ahalf = (ahi - alo)[:2] / 2
        bhalf = (bhi - blo)[:2] / 2
        gap = 0.012
        t = min((bhalf[0] + ahalf[0] + gap) / max(abs(d[0]), 1e-6), (bhalf[1] + ahalf[1] + gap) / max(abs(d[1]), 1e-6))
        xy = bc[:2] + t * d
        yield from self.place_at(xy, blo[2] - 0.0 if blo[2] > 0.3 else 0.0)
        yield from self.wait(10)


class OpenDrawerExpert(ScriptedExpert):
    """Grasp the top drawer's handle with vertical fingers and pull it out."""

    def script(self):
        cab = next(o for o in self.task.scene.objects.values() if o.openables)
        # The top drawer: the last one built.
        k = len(cab.openables) - 1
        hid = self.model.geom(f"{cab.name}/drawer{k}/handle").id
        h = self.data.geom_xpos[hid].copy()
        R = self.data.xmat[self.model.body(cab.body).id].reshape(3, 3)
        out = R[:, 0]  # the chest's front direction (towards the robot)
        arm = self.arm_for(h)
        # Approach from the front, fingers horizontal-pointing towards the chest, closing vertically.
        from behavior_gym.experts.ik import rotation_error  # noqa: F401  (documented dependency)

        yaw_in = math.atan2(-out[1], -out[0])  # direction the fingers point: into the chest
        rot = _front_grasp(yaw_in)
        pre = h + out * 0.12
        yield from self.gripper(arm, True, steps=2)
        yield from self._reach_rot(arm, pre, rot)
        yield from self._reach_rot(arm, h + out * 0.005, rot, speed=0.5)
        yield from self.gripper(arm, False, steps=14)
        travel = cab.openables[k].open_value
        for frac in (0.35, 0.7, 1.0):
            yield from self._reach_rot(arm, h + out * (0.005 + 0.8 * travel * frac), rot, speed=0.5, tol=0.04)
        yield from self.gripper(arm, True, steps=8)
        yield from self._reach_rot(arm, h + out * (0.8 * travel + 0.1), rot, speed=0.8, tol=0.05)
        yield from self.wait(10)

    def _reach_rot(self, arm, pos, rot, speed=None, tol=0.02):
        q, err = self.ik[arm].solve(self.data, pos, rot, q0=np.concatenate([self.cmd[3:7], self.cmd[_arm(arm)]]),
                                    rot_weight=0.5)
        if err > tol:
            raise ExpertFailure(f"{arm} arm cannot reach the drawer handle at {np.round(pos, 3)} ({err:.3f} m)")
        yield from self.move_joints(arm, q, speed)


def _arm(arm):
    from behavior_gym.experts.base import ARM

    return ARM[arm]


def _front_grasp(yaw_in: float) -> np.ndarray:
    """Site orientation with the fingers pointing horizontally along `yaw_in`, closing vertically."""
    c, s = math.cos(yaw_in), math.sin(yaw_in)
    z = -np.array([c, s, 0.0])  # site z points from the fingertips back to the wrist
    y = np.array([0.0, 0.0, 1.0])  # fingers close along world z
    x = np.cross(y, z)
    return np.column_stack([x, y, z])
