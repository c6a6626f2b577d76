"""Scripted experts: privileged-state controllers that produce the env's 23-D actions.

An expert reads the simulator directly (object poses from the task's `MujocoState`, the robot's
joints) and writes actions in the env's own layout — base velocities in the robot frame, absolute
torso and arm joint targets, gripper commands — so its episodes are ordinary env episodes that
can be recorded as demonstrations.

`ScriptedExpert.script()` is a generator of actions; primitives (`drive_to`, `move_arm`,
`gripper`, `pick`, `place_at`, `press`) are generators too and are composed with `yield from`.
Arm motions solve inverse kinematics (`ik.ArmIK`) once per waypoint and interpolate joint targets;
base motions are closed-loop on the base pose.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator

import mujoco
import numpy as np

from behavior_gym.backends.mujoco import robot as r1
from behavior_gym.experts.ik import ArmIK, grasp_rotation
from behavior_gym.spaces import ACTION_HIGH, ACTION_LOW, ACTION_PART, GRIPPER_OPEN_WIDTH

DT = 1.0 / r1.CONTROL_HZ
DV = np.array([0.02, 0.02, 0.03])  # gentle experts: the most the base velocity changes per step
TORSO = ACTION_PART["torso"].slice
ARM = {"left": ACTION_PART["left_arm"].slice, "right": ACTION_PART["right_arm"].slice}
GRIP = {"left": ACTION_PART["left_gripper"].start, "right": ACTION_PART["right_gripper"].start}
FINGERTIP = 0.03  # fingertips reach this far below the eef site
SQUEEZE = 0.012  # a closing finger aims this far inside the object's side (~10 N of grip)
STALLED = 0.03  # rad/s: joints slower than this have stopped following their targets
PALM_CLEAR = 0.035  # the palm starts this far above the eef site: grasp tall things near the top
PALM_HALF = (0.035, 0.07)  # across and along the finger-closing axis (robot.py's hand)
PRESHAPE = 0.015  # room left on each side of an object between the opened fingers (gentle experts)
# A compact arm pose for driving and turning: elbow folded, hand at ~1.25 m in front of the chest,
# clear of tables and counters (the reset pose leaves the hands at table height).
CARRY = {"left": (-0.2, 0.3, 0.0, -2.0, 0.0, 0.3, 0.0), "right": (-0.2, -0.3, 0.0, -2.0, 0.0, 0.3, 0.0)}
# The idle arm while the other one reaches low: swung back and up, so that it stays clear of beds
# and tables when the torso leans far forward (a carried hand would be pushed into them and stall
# the torso).
STOW = {"left": (1.3, 0.25, -0.8, -2.0, -0.15, 0.7, 0.0), "right": (1.3, -0.25, 0.8, -2.0, -0.1, 0.6, -0.1)}
STANDOFF = (0.55, 0.17)  # where `approach` puts a point: ahead of, and out to the side of, the arm's shoulder
LOW_REACH = 0.45  # targets below this height lean the torso far enough to stow the idle arm
OTHER = {"left": "right", "right": "left"}


class ExpertFailure(RuntimeError):
    """The script found no way to continue (an unreachable target, a lost object)."""


def robot_frame(points, base_pose) -> np.ndarray:
    """World points ([..., 3]) in the robot's frame for base pose (x, y, yaw): x forward, y left,
    z the world height."""
    x, y, yaw = base_pose
    c, s = math.cos(yaw), math.sin(yaw)
    p = np.asarray(points, float)
    dx, dy = p[..., 0] - x, p[..., 1] - y
    return np.stack([c * dx + s * dy, -s * dx + c * dy, p[..., 2]], -1)


class ScriptedExpert:
    """Base class. Subclasses implement `script()`.

    Args:
        env: a `Behavior-R1Pro-v0` env on the embedded backend (wrappers are unwrapped).
    """

    max_joint_speed = 1.4  # rad/s for interpolated arm motions
    gentle = False  # close the fingers with a bounded squeeze (see `gripper`)
    stop_when_stalled = False  # stop waiting for joints that no longer move (see `move_joints`)
    free_joint_speed: float | None = None  # rad/s for arm motions with empty hands (None: max_joint_speed)
    drive_speed = 0.6  # m/s of the base with empty hands
    turn_speed = 0.9  # rad/s of the base with empty hands
    drive_gain = 2.5  # 1/s: base velocity per metre of remaining distance
    drive_min_speed = 0.0  # m/s: the least speed short of the goal (0: proportional to the end)
    drive_settle_steps = 4  # control steps held still after each drive
    joint_settle_max = 30  # at most this many steps held after a joint move while the joints catch up
    turn_min_speed = 0.0  # rad/s: likewise for turning
    # Demonstrations of coming back (see `drive_to`): after a drive, with probability
    # `recovery_prob`, the base is displaced by up to `recovery_offset` metres and the expert drives
    # back. Off (0) unless set; `perturbing` is True while the displacement runs (not a label).
    recovery_offset = 0.0
    recovery_prob = 0.5
    # `reach` tries these in turn: the arm alone (torso held), then with the torso free to lean.
    torso_locks: tuple[bool, ...] = (True, False)

    def __init__(self, env):
        self.env = env.unwrapped
        self.backend = self.env.backend
        self.task = self.backend.task
        self.model = self.backend.model
        self.data = self.backend.data
        self.idx = self.backend.idx
        self.ik = {arm: ArmIK(self.model, arm) for arm in r1.ARMS}
        self.cmd = r1.reset_action()
        self._gen: Iterator[np.ndarray] | None = None
        self.failed: str | None = None
        self.holding = None
        self.ignore_obstacles: set[str] = set()
        self._pitch: dict[str, float | None] = {}
        self._lock: dict[str, bool] = {}
        # Servo addresses for the gravity offset (torso and both arms, in action-slot order).
        idx = self.idx
        self._pos_slots = np.asarray(idx.position_slots)
        self._pos_qadr = np.concatenate([idx.torso_qpos, idx.arm_qpos["left"], idx.arm_qpos["right"]])
        self._pos_dadr = np.concatenate([idx.torso_dof, idx.arm_dof["left"], idx.arm_dof["right"]])
        self._pos_kp = self.model.actuator_gainprm[np.asarray(idx.position_act), 0].copy()
        self._scratch = mujoco.MjData(self.model)
        self._offset_key = None
        self._offset = np.zeros(len(self._pos_slots))
        self._base_goal: tuple[float, float, float] | None = None
        self.perturbing = False
        self.rng = np.random.default_rng(0)  # its own randomness (recovery displacements, standoff jitter)

    # -- driving the script ------------------------------------------------------------------------
    def reset(self) -> None:
        # The reset pose as commanded (not as measured: joints may have sagged while settling).
        self.cmd = r1.reset_action()
        self.cmd[:3] = 0.0
        self.failed = None
        self.holding = None
        self._pitch, self._lock = {}, {}
        self._offset_key = None
        self._base_goal = None
        self.perturbing = False
        self._gen = self._run()

    def _run(self) -> Iterator[np.ndarray]:
        yield from self.carry_pose()
        yield from self.script()

    def act(self, obs=None) -> np.ndarray:
        if self._gen is None:
            self.reset()
        try:
            a = next(self._gen)
        except StopIteration:
            a = self._hold()
        except ExpertFailure as e:
            self.failed = str(e)
            self._gen = iter(())
            a = self._hold()
        return np.clip(a, ACTION_LOW, ACTION_HIGH).astype(np.float32)

    def script(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _hold(self) -> np.ndarray:
        # Hold the base where the last drive left it: arm and torso motions push the velocity-servoed
        # base around (leaning over a table drifts it by centimetres), which spoils the IK plans.
        if self._base_goal is None:
            self._base_goal = self.base_pose()
        gx, gy, gyaw = self._base_goal
        bx, by, byaw = self.base_pose()
        c, s = math.cos(byaw), math.sin(byaw)
        ex, ey = gx - bx, gy - by
        eyaw = (gyaw - byaw + math.pi) % (2 * math.pi) - math.pi
        self.cmd[:3] = (np.clip(3.0 * (c * ex + s * ey), -0.2, 0.2), np.clip(3.0 * (-s * ex + c * ey), -0.2, 0.2),
                        np.clip(3.0 * eyaw, -0.3, 0.3))
        return self._with_gravity_offset(self.cmd)

    def _with_gravity_offset(self, cmd: np.ndarray) -> np.ndarray:
        """Position targets shifted by the gravity load over the servo stiffness (tau / kp), so joints
        that are not gravity-compensated settle where the script wants them instead of sagging."""
        key = cmd[3:].tobytes()
        if key != self._offset_key:
            m, d = self.model, self._scratch
            d.qpos[:] = self.data.qpos
            d.qpos[self._pos_qadr] = cmd[self._pos_slots]
            d.qvel[:] = 0.0
            mujoco.mj_forward(m, d)
            load = d.qfrc_bias[self._pos_dadr] - d.qfrc_gravcomp[self._pos_dadr]
            self._offset = load / self._pos_kp
            self._offset_key = key
        out = cmd.copy()
        out[self._pos_slots] += self._offset
        return out

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self):
        st = self.task.state
        st.update(self.data)
        return st

    def base_pose(self) -> tuple[float, float, float]:
        q = self.data.qpos[self.idx.base_qpos]
        return float(q[0]), float(q[1]), float(q[2])

    def to_robot(self, p) -> np.ndarray:
        p = np.asarray(p, float)
        return robot_frame(p if len(p) > 2 else np.r_[p, 0.0], self.base_pose())

    def aabb(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        st = self.state
        lo, hi = st.aabb(st.index[name])
        return lo.copy(), hi.copy()

    def center(self, name: str) -> np.ndarray:
        lo, hi = self.aabb(name)
        return (lo + hi) / 2

    def body_yaw(self, name: str) -> float:
        R = self.data.xmat[self.model.body(self.task.scene.objects[name].body).id].reshape(3, 3)
        return math.atan2(R[1, 0], R[0, 0])

    def holds(self, pred: str, *names: str) -> bool:
        st = self.state
        return st.evaluate(pred, *(st.index[n] for n in names))

    def goal_done(self) -> bool:
        return self.task.goal_status(self.model, self.data).success

    # -- primitives ------------------------------------------------------------------------------
    def wait(self, steps: int) -> Iterator[np.ndarray]:
        for _ in range(steps):
            yield self._hold()

    def gripper(self, arm: str, open_: bool, steps: int = 12, width: float | None = None) -> Iterator[np.ndarray]:
        """Open or close. `width`: closing, the object's width across the fingers (they aim a little
        inside it: a firm but gentle squeeze, full force pops round objects out of the fingers);
        opening, the gap to leave between them."""
        self.cmd[GRIP[arm]] = 1.0 if open_ else -1.0
        if width is not None:
            target = max(0.0, width / 2 if open_ else width / 2 - SQUEEZE)  # per finger
            self.cmd[GRIP[arm]] = float(np.clip(target / (0.5 * GRIPPER_OPEN_WIDTH) - 1.0, -1.0, 1.0))
        yield from self.wait(steps)

    def move_joints(self, arm: str | None, q: np.ndarray, speed: float | None = None, settle_tol: float = 0.015,
                    settle_max: int | None = None) -> Iterator[np.ndarray]:
        """Interpolate torso (+ arm) targets to `q` = torso 4 (+ arm 7), then hold them until the joints
        are within `settle_tol` (at most `settle_max` steps; None: `joint_settle_max`)."""
        settle_max = self.joint_settle_max if settle_max is None else settle_max
        speed = speed or self.max_joint_speed
        start = np.concatenate([self.cmd[TORSO], self.cmd[ARM[arm]]]) if arm else self.cmd[TORSO].copy()
        q = np.asarray(q, float)
        n = max(1, int(math.ceil(np.max(np.abs(q - start)) / (speed * DT))))
        for k in range(1, n + 1):
            qi = start + (q - start) * (k / n)
            self.cmd[TORSO] = qi[:4]
            if arm:
                self.cmd[ARM[arm]] = qi[4:]
            yield self._hold()
        # Let the position controllers catch up with the target.
        adr = np.concatenate([self.idx.torso_qpos, self.idx.arm_qpos[arm]]) if arm else self.idx.torso_qpos
        dadr = np.concatenate([self.idx.torso_dof, self.idx.arm_dof[arm]]) if arm else self.idx.torso_dof
        for k in range(settle_max):
            if np.max(np.abs(self.data.qpos[adr] - q)) < settle_tol:
                break
            # Stalled (a torso leaning on its limit, a hand resting on a table): waiting longer
            # does not bring the joints closer.
            if self.stop_when_stalled and k >= 4 and np.max(np.abs(self.data.qvel[dadr])) < STALLED:
                break
            yield self._hold()

    def carry_pose(self, arms=("left", "right"), speed: float = 2.5) -> Iterator[np.ndarray]:
        """Arms tucked, torso upright: safe to turn and drive."""
        start = self.cmd.copy()
        target = self.cmd.copy()
        target[TORSO] = r1.reset_action()[TORSO]
        for arm in arms:
            target[ARM[arm]] = CARRY[arm]
        n = max(1, int(math.ceil(np.max(np.abs(target[3:] - start[3:])) / (speed * DT))))
        for k in range(1, n + 1):
            self.cmd[3:] = start[3:] + (target[3:] - start[3:]) * (k / n)
            yield self._hold()
        yield from self.wait(3)

    def stow(self, arm: str, speed: float = 2.5) -> Iterator[np.ndarray]:
        """Swing `arm` back out of the way (see `STOW`); `carry_pose` brings it back."""
        start = self.cmd[ARM[arm]].copy()
        target = np.array(STOW[arm])
        if np.max(np.abs(target - start)) < 1e-3:
            return
        n = max(1, int(math.ceil(np.max(np.abs(target - start)) / (speed * DT))))
        for k in range(1, n + 1):
            self.cmd[ARM[arm]] = start + (target - start) * (k / n)
            yield self._hold()

    def _near_furniture(self, p, reach: float = 0.5) -> bool:
        """Whether furniture stands within `reach` of `p` (where a leaning robot's idle hand goes)."""
        half = np.array([reach, reach])
        return any(_rects_overlap(np.asarray(p[:2], float), 0.0, half, c, fyaw, hf)
                   for c, fyaw, hf in self._fixture_rects())

    def _stowed(self, arm: str) -> bool:
        return bool(np.max(np.abs(self.cmd[ARM[arm]] - np.array(STOW[arm]))) < 1e-3)

    def reach(self, arm: str, pos, yaw: float, speed: float | None = None, pitches=(0.0, 0.25, 0.5, 0.8),
              tol: float = 0.006, linear: bool = False) -> Iterator[np.ndarray]:
        """Move the arm's grasp point to `pos`, fingers down (leaning away from the robot if that is
        needed to reach), closing across `yaw`. `linear`: along a straight line, keeping the current
        hand orientation (descents and lifts)."""
        q0 = np.concatenate([self.cmd[TORSO], self.cmd[ARM[arm]]])
        tilt = self.base_pose()[2]
        if linear and self._pitch.get(arm) is not None:
            rot = grasp_rotation(yaw, self._pitch[arm], tilt)
            start = self.data.site_xpos[self.model.site(f"{arm}_eef").id].copy()
            pos = np.asarray(pos, float)
            n = max(1, int(math.ceil(np.linalg.norm(pos - start) / 0.02)))
            qs, q = [], q0
            for k in range(1, n + 1):
                q, err = self.ik[arm].solve(self.data, start + (pos - start) * k / n, rot, q0=q, restarts=0,
                                            torso_lock=False)
                qs.append(q)
            if err > 0.03:
                raise ExpertFailure(f"{arm} arm cannot reach {np.round(pos, 3)} in a line (error {err:.3f} m)")
            speed = speed or self.max_joint_speed
            for q in qs:
                yield from self.move_joints(arm, q, speed, settle_max=0)
            yield from self.move_joints(arm, qs[-1], speed)
            return
        best = None
        # Fingers as vertical as possible; the arm alone before leaning the torso.
        for pitch in pitches:
            for lock in self.torso_locks:
                q, err = self.ik[arm].solve(self.data, pos, grasp_rotation(yaw, pitch, tilt), q0=q0, torso_lock=lock)
                if best is None or err < best[1] - 1e-4:
                    best = (q, err, pitch, lock)
                if err < tol:
                    break
            if best[1] < tol:
                break
        if best[1] > 0.015:
            raise ExpertFailure(f"{arm} arm cannot reach {np.round(pos, 3)} (error {best[1]:.3f} m)")
        self._pitch[arm], self._lock[arm] = best[2], best[3]
        if speed is None and self.holding is None:
            speed = self.free_joint_speed
        yield from self.move_joints(arm, best[0], speed)

    def drive_to(self, x: float, y: float, yaw: float, tol: float = 0.015, yaw_tol: float = 0.03,
                 max_steps: int = 240) -> Iterator[np.ndarray]:
        """Closed-loop holonomic base motion to a world pose.

        With `recovery_offset` > 0 the drive is sometimes followed by a displacement of the base (up
        to that far sideways, less forward and back, in the robot's frame) and a second drive back to
        the pose: a clone executing 8-action chunks open loop overshoots where the expert stops, and
        demonstrations that never leave the expert's path do not show the way back (DART's
        covariate shift). The displacement's actions are flagged (`perturbing`) so that recorders
        leave them out of the labels."""
        yield from self._drive(x, y, yaw, tol, yaw_tol, max_steps)
        if self.recovery_offset > 0 and self.rng.random() < self.recovery_prob:
            r = self.recovery_offset
            fwd, side = self.rng.uniform(-0.4 * r, 0.25 * r), self.rng.uniform(-r, r)
            bx, by, byaw = self.base_pose()
            c, s_ = math.cos(byaw), math.sin(byaw)
            ox, oy = bx + c * fwd - s_ * side, by + s_ * fwd + c * side
            if self.base_free(ox, oy, byaw):
                self.perturbing = True
                try:
                    yield from self._drive(ox, oy, byaw, tol, yaw_tol, max_steps // 2)
                finally:
                    self.perturbing = False
                yield from self._drive(x, y, yaw, tol, yaw_tol, max_steps)
        self._base_goal = self.base_pose()
        yield from self.wait(self.drive_settle_steps)

    def _drive(self, x: float, y: float, yaw: float, tol: float, yaw_tol: float, max_steps: int
               ) -> Iterator[np.ndarray]:
        for _ in range(max_steps):
            bx, by, byaw = self.base_pose()
            ex, ey = x - bx, y - by
            eyaw = (yaw - byaw + math.pi) % (2 * math.pi) - math.pi
            if math.hypot(ex, ey) < tol and abs(eyaw) < yaw_tol:
                break
            c, s = math.cos(byaw), math.sin(byaw)
            vx, vy = c * ex + s * ey, -s * ex + c * ey
            v = np.array([vx, vy]) * self.drive_gain
            n = np.linalg.norm(v)
            if n > self.drive_speed:
                v *= self.drive_speed / n
            elif 0 < n < self.drive_min_speed and math.hypot(ex, ey) >= tol:
                v *= self.drive_min_speed / n
            w = float(np.clip(3.0 * eyaw, -self.turn_speed, self.turn_speed))
            if abs(eyaw) >= yaw_tol and abs(w) < self.turn_min_speed:
                w = math.copysign(self.turn_min_speed, eyaw)
            new = np.array([v[0], v[1], w])
            if self.gentle and self.holding is not None:
                # Slower, with smooth accelerations: a jerk of the base shakes a held object out of
                # the fingers.
                n = np.linalg.norm(new[:2])
                if n > 0.35:
                    new[:2] *= 0.35 / n
                new[2] = np.clip(new[2], -0.45, 0.45)
                new = self.cmd[:3] + np.clip(new - self.cmd[:3], -DV, DV)
            self.cmd[:3] = new
            yield self._with_gravity_offset(self.cmd)

    # -- manipulation ----------------------------------------------------------------------------
    def grasp_yaw(self, name: str) -> float:
        """World yaw for the finger-closing axis across the object's narrow horizontal side."""
        g, _, _ = self.footprint(name)
        # Fingers close along the site's y axis = (yaw_grasp + pi/2): across the short side.
        # Keep the hand's heading within +-90 deg of the robot's for a comfortable wrist.
        byaw = self.base_pose()[2]
        rel = (g - byaw + math.pi) % (2 * math.pi) - math.pi
        if rel > math.pi / 2:
            rel -= math.pi
        elif rel < -math.pi / 2:
            rel += math.pi
        return byaw + rel

    def footprint(self, name: str) -> tuple[float, float, float]:
        """(world yaw of the long horizontal axis, long half extent, short half extent) of an object
        as it lies now (a can on its side has its long axis horizontal)."""
        o = self.task.scene.objects[name]
        R = self.data.xmat[self.model.body(o.body).id].reshape(3, 3)
        up = int(np.argmax(np.abs(R[2, :])))
        (i, j) = [k for k in range(3) if k != up]
        if o.half[i] < o.half[j]:
            i, j = j, i
        return math.atan2(R[1, i], R[0, i]), o.half[i], o.half[j]

    def arm_for(self, p) -> str:
        return "left" if self.to_robot(p)[1] >= 0 else "right"

    def grasp_height(self, name: str) -> float:
        """Where the eef site goes to grasp `name` from above: flat things low between the fingertips,
        tall ones near the top (the palm stops above them)."""
        lo, hi = self.aabb(name)
        height = hi[2] - lo[2]
        z = max((lo[2] + hi[2]) / 2, lo[2] + FINGERTIP + 0.008) if height > 0.03 else lo[2] + FINGERTIP - 0.012 + height
        return max(min(z, hi[2] - 0.01), hi[2] - PALM_CLEAR) if height > 0.045 else z

    def above_neighbours(self, name: str, xy, r: float = 0.25) -> float:
        """A site height from which the hand can come straight down on `name` at `xy`: its fingertips
        above every free object within `r` (the swing there would knock over a drill standing in a
        toolbox beside it)."""
        tops = [self.aabb(n)[1][2] for n, o in self.task.scene.objects.items()
                if o.role == "free" and n != name and np.linalg.norm(self.center(n)[:2] - np.asarray(xy)[:2]) < r]
        return max(tops, default=0.0) + FINGERTIP + 0.04

    def come_down_over(self, arm: str, name: str, xy, z: float, yaw: float, tippy: bool = False
                       ) -> Iterator[np.ndarray]:
        """Bring the hand over `name` at `xy`, site at height `z`. Next to taller things (a toolbox
        wall), or over a `tippy` one (a standing drill), it goes higher first and comes down in a
        line: a joint-space swing dips below both of its ends and would knock them over."""
        high = self.above_neighbours(name, xy)
        if tippy:
            high = max(high, z)
        elif high <= z:
            yield from self.reach(arm, (xy[0], xy[1], z), yaw)
            return
        yield from self.reach(arm, (xy[0], xy[1], high + 0.06), yaw)
        yield from self.reach(arm, (xy[0], xy[1], high), yaw, speed=self.free_joint_speed, linear=True)

    def palm_blockers(self, name: str, xy, yaw: float, z: float, margin: float = 0.01) -> list[str]:
        """The free objects that the palm of a hand coming down over `xy` (site at height `z`,
        closing across `yaw + pi/2` as in `grasp_rotation`) would land on: those under it reaching
        above its bottom. A container holding `name` does not count (the hand goes into it)."""
        out = []
        for n, o in self.task.scene.objects.items():
            if o.role != "free" or n == name:
                continue
            lo, hi = self.aabb(n)
            if hi[2] <= z + PALM_CLEAR:
                continue
            g, lh, sh = self.footprint(n)
            c, h = (lo + hi)[:2] / 2, np.array([lh, sh])
            if _rects_overlap(self.center(name)[:2], 0.0, np.zeros(2), c, g, h):
                continue  # `name` lies inside it
            if _rects_overlap(np.asarray(xy, float), yaw, np.array(PALM_HALF) + margin, c, g, h):
                out.append(n)
        return out

    def slide(self, name: str, at, by, arm: str | None = None, press: float = 0.008) -> Iterator[np.ndarray]:
        """Press the closed fingertips on `name`'s top at `at` (xy) and drag it over its support by
        `by` (xy), the palm's narrow side leading: moves a small thing out from beside a tall one (a
        box's wall), where the open hand has no room to come down around it."""
        lo, hi = self.aabb(name)
        c = np.array([at[0], at[1], hi[2]])
        d = np.asarray(by, float)
        to_xy = c[:2] + d
        arm = arm or self.arm_for(c)
        self.ignore_obstacles = {name}
        yield from self.approach(c, arm)
        byaw = self.base_pose()[2]
        rel = (math.atan2(d[1], d[0]) - byaw + math.pi) % (2 * math.pi) - math.pi
        yaw = byaw + (rel - math.pi if rel > math.pi / 2 else rel + math.pi if rel < -math.pi / 2 else rel)
        z = hi[2] + FINGERTIP - press
        if z < LOW_REACH and self._near_furniture(c):
            yield from self.stow(OTHER[arm])
        yield from self.gripper(arm, False, steps=2)
        yield from self.come_down_over(arm, name, c, z + 0.1, yaw)
        yield from self.reach(arm, (c[0], c[1], z), yaw, speed=0.5, linear=True)
        yield from self.reach(arm, (to_xy[0], to_xy[1], z), yaw, speed=0.3, linear=True)
        yield from self.reach(arm, (to_xy[0], to_xy[1], z + 0.1), yaw, speed=0.8, linear=True)
        yield from self.gripper(arm, True, steps=2)

    def pick(self, name: str, arm: str | None = None, lift: float = 0.1, then=None) -> Iterator[np.ndarray]:
        """Top-down grasp of `name` and lift. `then`: where it goes next (helps choose the arm)."""
        lo, hi = self.aabb(name)
        c = (lo + hi) / 2
        arm = arm or self.arm_for(c if then is None else (c + np.asarray(then)) / 2)
        self.ignore_obstacles = {name}
        yield from self.approach(c, arm)
        lo, hi = self.aabb(name)
        c = (lo + hi) / 2
        z = self.grasp_height(name)
        yaw = self.grasp_yaw(name)
        if z < LOW_REACH and self._near_furniture(c):
            yield from self.stow(OTHER[arm])
        # Gentle: open only a little wider than the object, so that the fingers fit between it and a
        # wall beside it.
        width = 2 * (self.footprint(name)[2] + PRESHAPE) if self.gentle else None
        yield from self.gripper(arm, True, steps=2, width=width)
        tippy = self.gentle and hi[2] - lo[2] > 3 * self.footprint(name)[2]
        yield from self.come_down_over(arm, name, c, max(hi[2] + 0.1, z + 0.1), yaw, tippy=tippy)
        if self.gentle:
            c = yield from self.hover_over(arm, name, z, yaw)
        yield from self.reach(arm, (c[0], c[1], z), yaw, speed=0.8, linear=True)
        yield from self.gripper(arm, False, steps=12, width=2 * self.footprint(name)[2] if self.gentle else None)
        z0 = lo[2]
        yield from self.reach(arm, (c[0], c[1], hi[2] + lift), yaw, speed=1.0, linear=True)
        # Held: touching both fingers, or at least lifted with the hand (a can can rest on one finger).
        if not self.holds("grasped", *self._agent_and(name)) and self.aabb(name)[0][2] < z0 + 0.6 * lift:
            raise ExpertFailure(f"lost {name} after grasping")
        self.holding = (arm, name, yaw)
        if self._stowed(OTHER[arm]):
            yield from self.carry_pose((OTHER[arm],))

    def settle(self, arm: str, vel_tol: float = 0.01, max_steps: int = 20) -> Iterator[np.ndarray]:
        """Wait until the torso and `arm` have stopped moving (the hand is where the servos leave it)."""
        dadr = np.concatenate([self.idx.torso_dof, self.idx.arm_dof[arm]])
        for _ in range(max_steps):
            if np.max(np.abs(self.data.qvel[dadr])) < vel_tol:
                break
            yield self._hold()

    def hover_over(self, arm: str, name: str, z: float, yaw: float, tol: float = 0.003
                   ) -> Generator[np.ndarray, None, np.ndarray]:
        """Bring the open fingertips just above `name`, centred on it to within `tol` by measuring the
        hand (IK residuals and servo sag leave it a centimetre off; a box nearly as wide as the open
        gripper then lands under a finger). Returns the xy to descend to (with the correction)."""
        site_id = self.model.site(f"{arm}_eef").id
        hover = z + 0.05  # fingertips about a centimetre above the object's top
        c = self.center(name)
        target = c[:2].copy()
        yield from self.reach(arm, (target[0], target[1], hover), yaw, speed=0.8, linear=True)
        for _ in range(3):
            yield from self.settle(arm)
            c = self.center(name)
            err = c[:2] - self.data.site_xpos[site_id][:2]
            if np.linalg.norm(err) < tol:
                break
            target += 0.6 * err  # the hand overshoots a full correction
            yield from self.reach(arm, (target[0], target[1], hover), yaw, speed=0.5, linear=True)
        return target

    def _agent_and(self, name):
        agent = next((n for n, o in self.task.scene.objects.items() if o.role == "agent"), None)
        return (agent or name, name)

    def place_at(self, xy, bottom_z: float, yaw: float | None = None, drop: float = 0.01, tuck: bool = False,
                 rim_z: float | None = None, long_yaw: float | None = None) -> Iterator[np.ndarray]:
        """Put the held object down with its bottom at `bottom_z` (+ `drop`) over `xy`. `rim_z`: the
        top of the walls around `xy` (a bin, a box): the object comes in above it, and the fingers are
        opened just above it (the object drops the rest of the way). `long_yaw`: the world yaw (either
        way) for the long side of an object held across its narrow side (packing a box)."""
        arm, name, gyaw = self.holding
        byaw0 = self.base_pose()[2]
        yield from self.approach((xy[0], xy[1], bottom_z), arm)
        yaw = gyaw + (self.base_pose()[2] - byaw0) if yaw is None else yaw
        if long_yaw is not None:  # the smaller turn of the wrist that lines the object up
            yaw += (long_yaw - yaw + math.pi / 2) % math.pi - math.pi / 2
        lo, hi = self.aabb(name)
        if self.gentle and np.linalg.norm((lo + hi) / 2 - self.data.site_xpos[self.model.site(f"{arm}_eef").id]) > 0.2:
            raise ExpertFailure(f"lost {name} while carrying it")
        site = self.data.site_xpos[self.model.site(f"{arm}_eef").id]
        below = site[2] - lo[2]  # how far the object hangs below the grasp point
        z = bottom_z + below + drop
        pre = z + 0.1
        if rim_z is not None:
            pre = max(pre, rim_z + below + 0.04)
            z = max(z, rim_z + FINGERTIP + 0.015)
        if z < LOW_REACH and self._near_furniture(xy):
            yield from self.stow(OTHER[arm])
        if self.gentle:
            # Along straight lines with the hand's orientation kept: swinging the hand round in joint
            # space squeezes round things out of the fingers.
            try:
                site = self.data.site_xpos[self.model.site(f"{arm}_eef").id].copy()
                high = max(site[2], pre + (0.15 if rim_z is not None else 0.0))
                yield from self.reach(arm, (xy[0], xy[1], high), yaw, linear=True)
            except ExpertFailure:
                yield from self.reach(arm, (xy[0], xy[1], pre + (0.15 if rim_z is not None else 0.0)), yaw)
            yield from self.reach(arm, (xy[0], xy[1], pre), yaw, linear=True)
        elif rim_z is not None:  # from high above, straight down: the hand does not sweep into the walls
            yield from self.reach(arm, (xy[0], xy[1], pre + 0.15), yaw)
            yield from self.reach(arm, (xy[0], xy[1], pre), yaw, linear=True)
        else:
            yield from self.reach(arm, (xy[0], xy[1], pre), yaw)
        yield from self.reach(arm, (xy[0], xy[1], z), yaw, speed=0.8, linear=True)
        yield from self.gripper(arm, True, steps=10)
        yield from self.reach(arm, (xy[0], xy[1], max(z + 0.1, pre)), yaw, speed=1.0, linear=True)
        self.holding = None
        if tuck or self._stowed(OTHER[arm]):
            yield from self.carry_pose((arm,) + ((OTHER[arm],) if self._stowed(OTHER[arm]) else ()))

    def press(self, pos, arm: str | None = None, depth: float = 0.012) -> Iterator[np.ndarray]:
        """Press a button at `pos` (its top centre) with closed fingertips, then lift."""
        arm = arm or self.arm_for(pos)
        yaw = self.base_pose()[2]
        yield from self.gripper(arm, False, steps=6)
        top = (pos[0], pos[1], pos[2] + FINGERTIP + 0.08)
        yield from self.reach(arm, top, yaw)
        yield from self.reach(arm, (pos[0], pos[1], pos[2] + FINGERTIP - depth), yaw, speed=0.4)
        yield from self.wait(4)
        yield from self.reach(arm, top, yaw, speed=0.6)

    # -- base placement ---------------------------------------------------------------------------
    def _fixture_rects(self):
        if not hasattr(self, "_rects"):
            self._rects = []
            for o in self.task.scene.objects.values():
                if o.role == "fixture":
                    x, y, yaw = o.pose
                    d, w, _ = o.spec.size
                    self._rects.append((np.array([x, y]), yaw, np.array([d / 2, w / 2])))
        return self._rects

    def base_free(self, x: float, y: float, yaw: float, margin: float = 0.04, strict: bool = False) -> bool:
        """Whether the base footprint at (x, y, yaw) clears every piece of furniture."""
        hb = np.array(r1.DIMS.base_half[:2]) + margin
        for c, fyaw, hf in self._fixture_rects():
            if _rects_overlap(np.array([x, y]), yaw, hb, c, fyaw, hf):
                return False
        # Low free objects on the floor are obstacles too (except what the arm is about to take).
        for n, o in self.task.scene.objects.items():
            if o.role != "free" or (n in self.ignore_obstacles and not strict):
                continue
            lo, hi = self.aabb(n)
            if hi[2] < 0.45 and lo[2] < 0.05:
                c, h = (lo + hi)[:2] / 2, (hi - lo)[:2] / 2
                if _rects_overlap(np.array([x, y]), yaw, hb, c, 0.0, h):
                    return False
        return True

    def approach(self, p, arm: str, x_des: float = STANDOFF[0], y_des: float = STANDOFF[1], turn: bool = True
                 ) -> Iterator[np.ndarray]:
        """Drive (and turn if that helps) so that `p` sits comfortably in front of `arm`'s shoulder,
        as far as the furniture allows."""
        bx, by, byaw = self.base_pose()
        side = 1.0 if arm == "left" else -1.0
        want = np.array([x_des, side * y_des])
        pr = self.to_robot(p)
        yaws = [byaw]
        if turn:
            yaws.append(byaw + math.atan2(pr[1] - want[1], pr[0]))
        best = None
        for yaw in yaws:
            c, s_ = math.cos(yaw), math.sin(yaw)
            gx = p[0] - (c * want[0] - s_ * want[1])
            gy = p[1] - (s_ * want[0] + c * want[1])
            end = (bx, by)
            for t in np.linspace(0.0, 1.0, 21):
                x, y = bx + t * (gx - bx), by + t * (gy - by)
                # Drive around what the arm is about to take rather than through it (pushing it
                # away): the ignored objects are only ignored where the base stops.
                if not self.base_free(x, y, yaw, strict=t < 0.85):
                    break
                end = (x, y)
            # Where p would be in the robot frame at the end of this plan.
            dx, dy = p[0] - end[0], p[1] - end[1]
            rel = np.array([c * dx + s_ * dy, -s_ * dx + c * dy])
            cost = np.linalg.norm(rel - want) + 0.05 * abs(yaw - byaw)
            if best is None or cost < best[0]:
                best = (cost, end, yaw)
        _, end, yaw = best
        if math.hypot(end[0] - bx, end[1] - by) > 0.01 or abs(yaw - byaw) > 0.03:
            yield from self.drive_to(end[0], end[1], yaw)

    def face(self, p, standoff: float | None = None) -> Iterator[np.ndarray]:
        """Turn (and optionally drive) so that point `p` is straight ahead at `standoff` metres."""
        bx, by, _ = self.base_pose()
        yaw = math.atan2(p[1] - by, p[0] - bx)
        if standoff is None:
            yield from self.drive_to(bx, by, yaw)
        else:
            d = math.hypot(p[0] - bx, p[1] - by)
            t = (d - standoff) / max(d, 1e-6)
            yield from self.drive_to(bx + t * (p[0] - bx), by + t * (p[1] - by), yaw)


def _rects_overlap(c1, yaw1, h1, c2, yaw2, h2) -> bool:
    """Separating-axis test for two rotated rectangles (centre, yaw, half extents)."""
    R1 = np.array([[math.cos(yaw1), -math.sin(yaw1)], [math.sin(yaw1), math.cos(yaw1)]])
    R2 = np.array([[math.cos(yaw2), -math.sin(yaw2)], [math.sin(yaw2), math.cos(yaw2)]])
    d = c2 - c1
    for axis in (R1[:, 0], R1[:, 1], R2[:, 0], R2[:, 1]):
        r1_ = abs(R1[:, 0] @ axis) * h1[0] + abs(R1[:, 1] @ axis) * h1[1]
        r2_ = abs(R2[:, 0] @ axis) * h2[0] + abs(R2[:, 1] @ axis) * h2[1]
        if abs(d @ axis) > r1_ + r2_:
            return False
    return True
