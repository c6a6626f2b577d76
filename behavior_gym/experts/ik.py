"""Inverse kinematics for the R1 Pro arms: damped least squares on MuJoCo site Jacobians.

`ArmIK.solve` finds torso + arm joint positions that put an arm's `*_eef` site (the point between
the fingertips) at a world position with a given orientation, starting from the current state,
with the base fixed where it is. The torso's pitch joints are part of the chain (weighted to move
less than the arm), so targets low on a table or at floor-level bins are reached by leaning; a
null-space pull towards a comfortable posture keeps solutions tidy. Joint limits are the action
bounds of `behavior_gym.spaces`.
"""

from __future__ import annotations

import mujoco
import numpy as np

from behavior_gym.backends.mujoco import robot as r1
from behavior_gym.spaces import ACTION_PART


def grasp_rotation(yaw: float, pitch: float = 0.0, tilt_yaw: float | None = None) -> np.ndarray:
    """Site orientation for a top grasp: fingers pointing down, closing along the horizontal axis at
    angle `yaw + pi/2`; the fingertips lean by `pitch` towards the horizontal direction `tilt_yaw`
    (default `yaw`), e.g. away from the robot to reach further over a table."""
    # Site axes: z points from the fingertips back to the wrist; y is the finger closing axis.
    t = yaw if tilt_yaw is None else tilt_yaw
    tilt = np.array([np.cos(t), np.sin(t), 0.0])
    z = np.cos(pitch) * np.array([0.0, 0.0, 1.0]) - np.sin(pitch) * tilt
    y = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
    y = y - (y @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    return np.column_stack([x, y, z])


def rotation_error(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Axis-angle vector rotating R onto R_target (world frame)."""
    E = R_target @ R.T
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, E.ravel())
    if q[0] < 0:
        q = -q
    v = np.empty(3)
    mujoco.mju_quat2Vel(v, q, 1.0)
    return v


class ArmIK:
    """IK for one arm (7 joints) plus the torso (4 joints) of the R1 Pro model."""

    def __init__(self, model: mujoco.MjModel, arm: str, torso_weight: float = 0.35):
        self.model = model
        self.arm = arm
        self.scratch = mujoco.MjData(model)
        jid = lambda n: model.joint(n).id  # noqa: E731
        self.torso_j = [jid(n) for n in r1.TORSO_JOINTS]
        self.arm_j = [jid(n) for n in r1.arm_joints(arm)]
        joints = self.torso_j + self.arm_j
        self.qadr = np.array([model.jnt_qposadr[j] for j in joints])
        self.dadr = np.array([model.jnt_dofadr[j] for j in joints])
        tp, ap = ACTION_PART["torso"], ACTION_PART[f"{arm}_arm"]
        self.lo = np.concatenate([tp.low, ap.low])
        self.hi = np.concatenate([tp.high, ap.high])
        self.site = model.site(f"{arm}_eef").id
        w = np.ones(len(joints))
        w[:4] = torso_weight
        w[3] = 0.05  # torso yaw: keep the chest facing forward
        self.weights = w
        rest = np.concatenate([r1.reset_action()[tp.slice], r1.ARM_RESET[arm]])
        self.rest = rest
        self.jacp = np.zeros((3, model.nv))
        self.jacr = np.zeros((3, model.nv))

    def solve(self, data: mujoco.MjData, pos, rot: np.ndarray | None = None, q0: np.ndarray | None = None,
              iters: int = 120, rot_weight: float = 0.4, torso_lock: bool = False, tol: float = 0.004,
              restarts: int = 3) -> tuple[np.ndarray, float]:
        """Joint targets (torso 4, arm 7) and the remaining position error in metres.

        Starts from `q0` (default: the current joints), then from the rest posture and perturbed
        postures if that ends in a local minimum; returns the best solution found."""
        start = data.qpos[self.qadr].copy() if q0 is None else np.array(q0, float)
        best = self._solve(data, pos, rot, start, iters, rot_weight, torso_lock)
        rng = np.random.default_rng(0)
        seeds = [np.concatenate([start[:4], self.rest[4:]])]
        seeds += [np.clip(seeds[0] + rng.normal(0, 0.5, len(start)) * (self.weights > 0.1), self.lo, self.hi)
                  for _ in range(restarts - 1)]
        for seed in seeds:
            if best[1] < tol:
                break
            cand = self._solve(data, pos, rot, seed, iters, rot_weight, torso_lock)
            if cand[1] < best[1]:
                best = cand
        return best

    def _solve(self, data, pos, rot, q0, iters, rot_weight, torso_lock) -> tuple[np.ndarray, float]:
        m, d = self.model, self.scratch
        d.qpos[:] = data.qpos
        q = np.array(q0, float)
        pos = np.asarray(pos, float)
        w = self.weights.copy()
        if torso_lock:
            w[:4] = 1e-4
        W = np.diag(w)
        err_p = np.inf
        for it in range(iters):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            x = d.site_xpos[self.site]
            e_p = pos - x
            err_p = float(np.linalg.norm(e_p))
            mujoco.mj_jacSite(m, d, self.jacp, self.jacr, self.site)
            Jp = self.jacp[:, self.dadr]
            if rot is not None:
                R = d.site_xmat[self.site].reshape(3, 3)
                e_r = rotation_error(rot, R)
                J = np.vstack([Jp, rot_weight * self.jacr[:, self.dadr]])
                e = np.concatenate([e_p, rot_weight * e_r])
                if err_p < 1e-3 and np.linalg.norm(e_r) < 1e-2:
                    break
            else:
                J, e = Jp, e_p
                if err_p < 1e-3:
                    break
            JW = J @ W
            lam = 0.03 if err_p > 0.02 else 0.005
            dq = W @ J.T @ np.linalg.solve(JW @ J.T + lam**2 * np.eye(len(e)), e)
            # Null-space pull towards the rest posture (arm only), small.
            Jpinv = W @ J.T @ np.linalg.solve(JW @ J.T + lam**2 * np.eye(len(e)), np.eye(len(e)))
            null = np.eye(len(q)) - Jpinv @ J
            # (damped, so it leaks a little into the task: only while far from the target)
            if it < iters // 2 and err_p > 0.02:
                pull = 0.05 * (self.rest - q)
                pull[:4] *= 0.5
                dq = dq + null @ pull
            step = np.linalg.norm(dq)
            if step > 0.25:
                dq *= 0.25 / step
            q = np.clip(q + dq, self.lo, self.hi)
        d.qpos[self.qadr] = q
        mujoco.mj_kinematics(m, d)
        err_p = float(np.linalg.norm(pos - d.site_xpos[self.site]))
        return q, err_p
