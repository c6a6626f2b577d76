"""Closed-loop pick-and-place experts: every step is planned afresh from the measured state.

`ScriptedExpert.pick` and `place_at` solve inverse kinematics once per waypoint and then play joint
targets open loop. Their joint targets are a complicated function of the object's pose (IK with
restarts, a choice of fingertip pitch), fixed at the waypoint, and nothing in them shows how to
recover from a state off the script's path. A policy cloned from them reached the object in about
half of held-out episodes even from privileged state (`benchmarks/bc_clonability.py`).

`ServoPickExpert` instead looks at the scene each step: where the hand is, where the object is,
whether the fingers hold it, and moves the hand a bounded step (`lookahead`) towards the point the
phase calls for, solving IK locally from the measured joints. The phase is read from the state, not
from a script's position: the hand descends as it comes over the object (a funnel), closes when it is
at the grasp point, lifts once the object is held, carries it over the target, descends, releases.
The way back from a small error is the same rule as the way forward, which is what a clone, whose
own errors take it off the demonstrated path, would need.

Measured (README, "Does it learn?"): it solves pick_and_place in 50 of 50 seeds and stacking in 47
of 50, but a state clone of it (`benchmarks/bc_clonability.py --arms servo`) did worse than one of
the scripted expert (2 % against 6 % success with ~190 demonstrations): each target is the measured
joints plus a small step, so an absolute 256-bin target must reproduce the joint angle to a bin or
two. Noise of 0.03 rad on its executed joint targets (DART) makes most episodes fail. The shipped
demonstrations therefore still come from the scripted experts (`EXPERTS`); this one is kept for
such experiments.
"""

from __future__ import annotations

import math

import numpy as np

from behavior_gym.experts.base import ARM, GRIP, TORSO, ScriptedExpert
from behavior_gym.experts.ik import grasp_rotation
from behavior_gym.experts.skills import _SkillExpert, place_floor


class ServoPickExpert(_SkillExpert):
    """Pick the task's moved object and put it on or in its target, closed loop (see the module).
    Subclasses say where the object goes (`place`)."""

    lookahead = 0.035  # m: how far ahead of the hand each step's IK target lies (sets the hand's speed)
    max_turn = 0.12  # rad: the most a step's target turns the hand
    max_lead = 0.15  # rad: the most a joint target leads its measured joint
    max_trim = 0.03  # m: the most the integral term adds to a step's target
    rot_weight = 0.2  # IK: metres of position error worth a radian of hand orientation error
    hover = 0.09  # m above the grasp point from which the hand comes straight down
    funnel = 0.03  # m of horizontal error over which the hand comes down from the hover height
    place_funnel = 0.012  # likewise for the held object over its place (narrower: a bowl's rim is near)
    at_tol = 0.012  # m: the hand is at the grasp point, or the object over its place
    drop = 0.01  # m the object falls when released
    lift_first = 0.03  # m: a held object rises to within this of the carry height before moving sideways

    def __init__(self, env):
        super().__init__(env)
        from behavior_gym.wrappers.shaping import moved_and_target

        self.obj, self.target = moved_and_target(self.task)
        self.arm = self.ARM
        self._site = self.model.site(f"{self.arm}_eef").id
        self._carry_checked, self._lifted, self._trim = False, False, np.zeros(3)

    def reset(self) -> None:
        super().reset()
        self._carry_checked, self._lifted, self._trim = False, False, np.zeros(3)

    # Where (robot frame, metres) the servo reaches from where the base stands; elsewhere the base
    # drives first. Local IK steps with the fingers down stall towards the far side of the body
    # (the wrist meets its limits), where a solver with restarts would still find a leaning pose.
    reach_x = (0.35, 0.85)
    reach_y = {"left": (-0.13, 0.55), "right": (-0.55, 0.13)}

    def approach(self, p, arm: str, **kwargs):
        x, y, _ = self.to_robot(p)
        (x0, x1), (y0, y1) = self.reach_x, self.reach_y[arm]
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            yield from ScriptedExpert.approach(self, p, arm, **kwargs)

    # -- what the subclasses say ------------------------------------------------------------------
    def place(self) -> tuple[np.ndarray, float, float | None]:
        """(xy, height for the object's bottom, world yaw for its faces or None) of the place."""
        raise NotImplementedError

    # -- the loop ---------------------------------------------------------------------------------
    def script(self):
        yield from self.gripper(self.arm, True, steps=2)
        self.ignore_obstacles = {self.obj}
        yield from self.approach(self.center(self.obj), self.arm)
        while True:
            if not self._carry_checked and self.held() and self._lifted:
                # The target may lie beyond the arm's reach from where the pick left the base (the
                # base drives with the object up, not sweeping it over the table).
                self._carry_checked = True
                xy, z, _ = self.place()
                yield from self.approach((xy[0], xy[1], z), self.arm)
            yield self.step()

    def held(self) -> bool:
        return self.holds("grasped", *self._agent_and(self.obj))

    def hand(self) -> tuple[np.ndarray, float]:
        """The eef site's position and the world yaw of its closing axis minus pi/2 (`grasp_rotation`'s yaw)."""
        R = self.data.site_xmat[self._site].reshape(3, 3)
        return self.data.site_xpos[self._site].copy(), math.atan2(R[1, 1], R[0, 1]) - math.pi / 2

    def finger_width(self) -> float:
        return float(np.sum(self.data.qpos[self.idx.finger_qpos[self.arm]]))

    def step(self) -> np.ndarray:
        site, hand_yaw = self.hand()
        lo, hi = self.aabb(self.obj)
        c = (lo + hi) / 2
        g = GRIP[self.arm]
        if self.held():
            xy, bottom, face_yaw = self.place()
            below = site[2] - lo[2]  # how far the object hangs below the grasp point
            z = bottom + below + self.drop
            carry = z + 0.1
            err = xy - c[:2]
            e = float(np.linalg.norm(err))
            down = self._down(e, self.place_funnel)
            goal = np.array([site[0] + err[0], site[1] + err[1], carry + (z - carry) * down])
            self._lifted = site[2] >= carry - self.lift_first
            if not self._lifted and e > self.funnel:
                goal[:2] = site[:2]  # up before across: do not drag it over the table or a rim
            yaw = hand_yaw
            if face_yaw is not None:  # turn the held object's faces onto the target's
                rel = (face_yaw - self.body_yaw(self.obj) + math.pi / 4) % (math.pi / 2) - math.pi / 4
                yaw = hand_yaw + rel
            self.cmd[g] = 1.0 if (e < self.at_tol and lo[2] - bottom < self.drop + 0.008) else -1.0
        elif self.goal_done():
            goal, yaw = site + (0.0, 0.0, 0.05), hand_yaw
            self.cmd[g] = 1.0
        else:
            z = self.grasp_height(self.obj)
            yaw = self.grasp_yaw(self.obj)
            e = float(np.linalg.norm(c[:2] - site[:2]))
            high = max(hi[2] + 0.06, z + self.hover)
            width = self.finger_width()
            need = 2 * self.footprint(self.obj)[2] + 0.01
            closing = self.cmd[g] < 0
            missed = closing and width < 0.004  # closed on nothing
            if missed or (not closing and width < need):
                # Open (again) with the hand up before coming down around the object.
                goal = np.array([c[0], c[1], high])
                self.cmd[g] = 1.0
            else:
                goal = np.array([c[0], c[1], high + (z - high) * self._down(e)])
                at = e < self.at_tol and abs(site[2] - z) < self.at_tol
                self.cmd[g] = -1.0 if (at or (closing and e < 2 * self.at_tol)) else 1.0
                if self.cmd[g] < 0:
                    goal = np.array([site[0], site[1], z])  # hold still while the fingers close
        self._move_hand(site, hand_yaw, goal, yaw)
        return self._hold()

    def _down(self, e: float, funnel: float | None = None) -> float:
        """How far down the funnel (0: at the hover height, 1: at the bottom) for a horizontal error."""
        return float(np.clip(1.0 - (e - 0.5 * self.at_tol) / (funnel or self.funnel), 0.0, 1.0))

    def _move_hand(self, site: np.ndarray, hand_yaw: float, goal: np.ndarray, yaw: float) -> None:
        """Set the torso and arm targets one IK step from the measured joints: the hand up to
        `lookahead` towards `goal`, turning up to `max_turn` towards fingers down, closing across
        `yaw`. Near the goal a small integral term (`_trim`) takes up what the servos' sag under a
        held object's weight leaves, which a target this close to the hand would not overcome."""
        d = goal - site
        n = float(np.linalg.norm(d))
        if n < self.lookahead:
            self._trim = self._trim + 0.15 * d
            t = float(np.linalg.norm(self._trim))
            if t > self.max_trim:
                self._trim *= self.max_trim / t
        else:
            self._trim = 0.8 * self._trim
        step = d * (self.lookahead / n) if n > self.lookahead else d
        turn = (yaw - hand_yaw + math.pi) % (2 * math.pi) - math.pi
        yaw = hand_yaw + float(np.clip(turn, -self.max_turn, self.max_turn))
        q_meas = np.concatenate([self.data.qpos[self.idx.torso_qpos], self.data.qpos[self.idx.arm_qpos[self.arm]]])
        q, _ = self.ik[self.arm]._solve(self.data, site + step + self._trim,
                                        grasp_rotation(yaw, 0.0, self.base_pose()[2]), q_meas, iters=30,
                                        rot_weight=self.rot_weight, torso_lock=False)
        dq = q - q_meas
        m = float(np.max(np.abs(dq)))
        q = q_meas + (dq * (self.max_lead / m) if m > self.max_lead else dq)
        self.cmd[TORSO] = q[:4]
        self.cmd[ARM[self.arm]] = q[4:]


class ServoPickAndPlaceExpert(ServoPickExpert):
    """Pick the object and put it in the bowl / on the plate."""

    def place(self):
        tlo, thi = self.aabb(self.target)
        return (tlo + thi)[:2] / 2, place_floor(self.target, tlo, thi), None


class ServoStackingExpert(ServoPickExpert):
    """Pick cube 1 and put it on cube 2, faces aligned."""

    def place(self):
        blo, bhi = self.aabb(self.target)
        return (blo + bhi)[:2] / 2, bhi[2], self.body_yaw(self.target)


SERVO_EXPERTS: dict[str, type[ServoPickExpert]] = {"pick_and_place": ServoPickAndPlaceExpert,
                                                    "stacking": ServoStackingExpert}
