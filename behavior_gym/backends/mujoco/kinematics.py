"""Inverse kinematics for the R1 Pro arms (damped least squares on MuJoCo Jacobians).

Used by scripted experts and tests to turn end-effector goals into the absolute joint targets
the 23-D action takes. Works on a scratch `MjData`, so the simulation state is never touched.
"""

from __future__ import annotations

import mujoco
import numpy as np

from behavior_gym.backends.mujoco import robot as r1


def quat_from_yaw_down(yaw: float, tilt: float = 0.0) -> np.ndarray:
    """Gripper pointing down (the arm's zero-pose orientation) tilted forward by `tilt` and
    rotated by `yaw` about the vertical (wxyz)."""
    qz = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
    qy = np.array([np.cos(-tilt / 2), 0.0, np.sin(-tilt / 2), 0.0])
    out = np.empty(4)
    mujoco.mju_mulQuat(out, qz, qy)
    return out


def finger_axis_for_yaw(yaw: float) -> np.ndarray:
    """World direction along which the fingers close for a grasp at heading `yaw`."""
    return np.array([-np.sin(yaw), np.cos(yaw), 0.0])


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

    # Starting postures tried when the current one leads into a local minimum: resting, reaching
    # forward-down over a table, reaching across the body.
    SEEDS = {
        "left": ((-0.3, 0.2, 0.0, -1.3, 0.0, 0.6, 0.0), (-0.9, 0.4, -0.8, -1.4, 0.0, 0.8, 0.0),
                 (-0.7, 0.1, 0.6, -1.6, 0.0, 0.5, 0.0)),
        "right": ((-0.3, -0.2, 0.0, -1.3, 0.0, 0.6, 0.0), (-0.9, -0.4, 0.8, -1.4, 0.0, 0.8, 0.0),
                  (-0.7, -0.1, -0.6, -1.6, 0.0, 0.5, 0.0)),
    }

    def solve(self, data, arm, pos, quat=None, q_arm=None, use_torso=False, tol=0.005, **kw):
        """Like `solve_from`, retrying from standard postures when the first start gets stuck.

        Returns (arm joint targets [7], torso joint targets [4], remaining position error in m).
        """
        best = self.solve_from(data, arm, pos, quat, q_arm, use_torso, **kw)
        for seed in self.SEEDS[arm]:
            if best[2] < tol:
                break
            cand = self.solve_from(data, arm, pos, quat, np.array(seed), use_torso, **kw)
            if cand[2] < best[2]:
                best = cand
        return best

    def solve_from(
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
        finger_axis: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """One damped-least-squares solve.

        `quat` (wxyz) asks for a full gripper orientation. `finger_axis` (a world direction) asks
        only that the fingers close along it, leaving the gripper's pitch about that axis free;
        `quat` then acts as a weak preference (weight 0.1) among those solutions. Side-by-side
        fingers on an object's faces need no more than that, and it is reachable over far more of
        the table than a strictly vertical grasp. Starts from the current configuration in `data`
        (or `q_arm` for the arm), so successive calls along a path give smooth, consistent solutions.
        """
        m, s = self.model, self.scratch
        s.qpos[:] = data.qpos
        if q_arm is not None:
            s.qpos[self.qadr[arm]] = q_arm
        # The torso's two upper pitch joints join the chain when asked (lean and reach).
        cols, qcols, lim = self.dadr[arm], self.qadr[arm], self.limits[arm]
        if use_torso:
            cols = np.concatenate([cols, self.torso_d[[1, 2]]])
            qcols = np.concatenate([qcols, self.torso_q[[1, 2]]])
            lim = np.concatenate([lim, self.torso_limits[[1, 2]]])
        lo, hi = lim[:, 0], lim[:, 1]
        site = self.site[arm]
        n_rot = (3 if quat is not None else 0) + (3 if finger_axis is not None else 0)
        err = np.zeros(3 + n_rot)
        pref = 0.1 if finger_axis is not None else 1.0
        cur_q = np.empty(4)
        dq_rot = np.empty(3)
        for _ in range(iters):
            mujoco.mj_kinematics(m, s)
            mujoco.mj_comPos(m, s)
            err[:3] = pos - s.site_xpos[site]
            mujoco.mj_jacSite(m, s, self._jacp, self._jacr, site)
            rows = [self._jacp[:, cols]]
            k = 3
            if finger_axis is not None:
                y_cur = s.site_xmat[site].reshape(3, 3)[:, 1]
                err[k:k + 3] = rot_weight * np.cross(y_cur, finger_axis)
                proj = np.eye(3) - np.outer(y_cur, y_cur)
                rows.append(rot_weight * proj @ self._jacr[:, cols])
                k += 3
            if quat is not None:
                mujoco.mju_mat2Quat(cur_q, s.site_xmat[site])
                mujoco.mju_subQuat(dq_rot, quat, cur_q)
                err[k:k + 3] = pref * rot_weight * dq_rot
                rows.append(pref * rot_weight * self._jacr[:, cols])
            jac = np.vstack(rows)
            if np.linalg.norm(err[:3]) < 5e-4 and np.linalg.norm(err[3:]) < 5e-3:
                break
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(len(err)), err)
            s.qpos[qcols] = np.clip(s.qpos[qcols] + np.clip(dq, -0.3, 0.3), lo, hi)
        mujoco.mj_kinematics(m, s)
        residual = float(np.linalg.norm(pos - s.site_xpos[site]))
        if finger_axis is not None:  # a misaligned grasp is as useless as a missed one
            residual += 0.2 * float(np.linalg.norm(np.cross(s.site_xmat[site].reshape(3, 3)[:, 1], finger_axis)))
        return s.qpos[self.qadr[arm]].copy(), s.qpos[self.torso_q].copy(), residual
