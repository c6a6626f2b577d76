"""Inverse kinematics for the R1 Pro arms (damped least squares on MuJoCo Jacobians).

Used by scripted experts and tests to turn end-effector goals into the absolute joint targets
the 23-D action takes. Works on a scratch `MjData`, so the simulation state is never touched.
"""

from __future__ import annotations

import mujoco
import numpy as np

from behavior_gym.backends.mujoco import robot as r1


def quat_from_yaw_down(yaw: float) -> np.ndarray:
    """Gripper pointing straight down (the arm's zero-pose orientation), rotated by `yaw` (wxyz)."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


class ArmIK:
    """Solve for arm (and optionally torso) joint positions that put `<arm>_eef` at a world pose."""

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.scratch = mujoco.MjData(model)
        jid = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)  # noqa: E731
        self.qadr = {a: np.array([model.jnt_qposadr[jid(j)] for j in r1.arm_joints(a)]) for a in r1.ARMS}
        self.dadr = {a: np.array([model.jnt_dofadr[jid(j)] for j in r1.arm_joints(a)]) for a in r1.ARMS}
        self.torso_q = np.array([model.jnt_qposadr[jid(j)] for j in r1.TORSO_JOINTS])
        self.torso_d = np.array([model.jnt_dofadr[jid(j)] for j in r1.TORSO_JOINTS])
        self.limits = {a: model.jnt_range[[jid(j) for j in r1.arm_joints(a)]] for a in r1.ARMS}
        self.torso_limits = model.jnt_range[[jid(j) for j in r1.TORSO_JOINTS]]
        self.site = {a: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"{a}_eef") for a in r1.ARMS}
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def solve(
        self,
        data: mujoco.MjData,
        arm: str,
        pos: np.ndarray,
        quat: np.ndarray | None = None,
        q_arm: np.ndarray | None = None,
        use_torso: bool = False,
        iters: int = 60,
        damping: float = 0.05,
        rot_weight: float = 0.5,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Returns (arm joint targets [7], torso joint targets [4], remaining position error in m).

        Starts from the current configuration in `data` (or `q_arm` for the arm), so successive
        calls along a path give smooth, consistent solutions.
        """
        m, s = self.model, self.scratch
        s.qpos[:] = data.qpos
        if q_arm is not None:
            s.qpos[self.qadr[arm]] = q_arm
        cols = np.concatenate([self.dadr[arm], self.torso_d[[1, 2]]]) if use_torso else self.dadr[arm]
        qcols = np.concatenate([self.qadr[arm], self.torso_q[[1, 2]]]) if use_torso else self.qadr[arm]
        lo = np.concatenate([self.limits[arm][:, 0], self.torso_limits[[1, 2], 0]]) if use_torso else self.limits[arm][:, 0]
        hi = np.concatenate([self.limits[arm][:, 1], self.torso_limits[[1, 2], 1]]) if use_torso else self.limits[arm][:, 1]
        site = self.site[arm]
        err = np.zeros(6 if quat is not None else 3)
        cur_q = np.empty(4)
        dq_rot = np.empty(3)
        for _ in range(iters):
            mujoco.mj_kinematics(m, s)
            mujoco.mj_comPos(m, s)
            err[:3] = pos - s.site_xpos[site]
            mujoco.mj_jacSite(m, s, self._jacp, self._jacr, site)
            if quat is not None:
                mujoco.mju_mat2Quat(cur_q, s.site_xmat[site])
                mujoco.mju_subQuat(dq_rot, quat, cur_q)
                err[3:] = rot_weight * dq_rot
                jac = np.vstack([self._jacp[:, cols], rot_weight * self._jacr[:, cols]])
            else:
                jac = self._jacp[:, cols]
            if np.linalg.norm(err[:3]) < 5e-4 and (quat is None or np.linalg.norm(err[3:]) < 5e-3):
                break
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(len(err)), err)
            s.qpos[qcols] = np.clip(s.qpos[qcols] + np.clip(dq, -0.3, 0.3), lo, hi)
        mujoco.mj_kinematics(m, s)
        residual = float(np.linalg.norm(pos - s.site_xpos[site]))
        return s.qpos[self.qadr[arm]].copy(), s.qpos[self.torso_q].copy(), residual
