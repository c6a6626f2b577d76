"""`reach`: a skill-free learning-sanity task — move the left gripper to a small red sphere.

The scene is the bare robot plus one visual-only sphere (no collision) placed at reset within
`radius` of the left gripper's resting point (uniform in a box, in the robot's frame). The goal is
graded so that BEHAVIOR's potential reward (the change in the fraction of goal predicates that hold)
is a shaped reward: ``within_20cm``, ``within_10cm`` and ``within_5cm`` of the target; the episode
succeeds (and terminates) when the gripper is within 5 cm.

A proprio-only policy needs the target: `ReachObservation` turns the observation into one float32
vector (61-D proprio, the target and target minus gripper, both in the robot frame), and
`LeftArmDeltaAction` lets the policy command only the left arm, as joint-position deltas, holding
the rest of the robot at its reset pose. `make_reach_env()` builds the whole stack:

    from behavior_gym.tasks.reach import make_reach_env
    env = make_reach_env()          # Box(67,) observations, Box(7,) actions in [-1, 1]
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from behavior_gym.spaces import ACTION_PART, PROPRIO_SLICES
from behavior_gym.tasks.base import EmbeddedTask, GoalStatus, TaskInfo

THRESHOLDS = (0.20, 0.10, 0.05)  # metres; the last one is success
TARGET_RGBA = (0.9, 0.1, 0.1, 1.0)


class ReachTask(EmbeddedTask):
    """Left gripper to a target sphere (see the module docstring).

    Args:
        max_steps: control steps per episode.
        box: half-extents (x forward, y left, z up, metres) of the box around the gripper's resting
            point from which the target is drawn.
        min_distance: targets closer than this to the resting point are redrawn.
    """

    def __init__(self, instance_id: int = 0, max_steps: int = 40, box=(0.15, 0.15, 0.12), min_distance: float = 0.08):
        self.info = TaskInfo("reach", "skill", "move the left gripper to the red ball", int(max_steps),
                             description="learning sanity: reach a point within 5 cm (graded 20/10/5 cm goal)")
        self.box = np.asarray(box, dtype=np.float64)
        self.min_distance = float(min_distance)
        self._site = self._mocap = -1
        self._home: np.ndarray | None = None

    def build(self, world: mujoco.MjSpec, instance_id: int) -> None:
        body = world.worldbody.add_body(name="reach_target", mocap=True, pos=[0.5, 0.2, 1.0])
        body.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.025, 0, 0], rgba=list(TARGET_RGBA),
                      contype=0, conaffinity=0, mass=0.0, density=0.0)

    def _ids(self, model: mujoco.MjModel) -> None:
        if self._site < 0:
            self._site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "left_eef")
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "reach_target")
            self._mocap = int(model.body_mocapid[body])

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        self._ids(model)
        mujoco.mj_forward(model, data)
        home = data.site_xpos[self._site].copy()  # the robot starts at yaw 0: world axes = robot axes
        while True:
            offset = rng.uniform(-self.box, self.box)
            if np.linalg.norm(offset) >= self.min_distance:
                break
        data.mocap_pos[self._mocap] = home + offset

    def distance(self, model: mujoco.MjModel, data: mujoco.MjData) -> float:
        self._ids(model)
        return float(np.linalg.norm(data.site_xpos[self._site] - data.mocap_pos[self._mocap]))

    def target_world(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        self._ids(model)
        return data.mocap_pos[self._mocap].copy()

    def goal_status(self, model: mujoco.MjModel, data: mujoco.MjData) -> GoalStatus:
        d = self.distance(model, data)
        status = GoalStatus()
        for t in THRESHOLDS:
            (status.satisfied if d <= t else status.unsatisfied).append(f"within_{round(t * 100)}cm")
        return status


class ReachObservation(gym.ObservationWrapper):
    """Observation = [proprio (61), target (3), target - left gripper (3)], float32, robot frame."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        n = env.observation_space["proprio"].shape[0] + 6
        self.observation_space = spaces.Box(-np.inf, np.inf, (n,), np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        backend = self.env.unwrapped.backend
        m, d = backend.model, backend.data
        base = backend.idx.base_body
        target = d.xmat[base].reshape(3, 3).T @ (backend.task.target_world(m, d) - d.xpos[base])
        eef = observation["proprio"][PROPRIO_SLICES["left_eef_pos"]]
        return np.concatenate([observation["proprio"], target, target - eef]).astype(np.float32)


class ReachShaping(gym.Wrapper):
    """Adds ``coef * (previous distance - distance)`` to the reward: potential-based shaping (it does
    not change which policies are optimal) that rewards every centimetre of progress."""

    def __init__(self, env: gym.Env, coef: float = 10.0):
        super().__init__(env)
        self.coef = float(coef)
        self._d = 0.0

    def _distance(self) -> float:
        backend = self.env.unwrapped.backend
        return backend.task.distance(backend.model, backend.data)

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        self._d = self._distance()
        return out

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        d = self._distance()
        reward, self._d = float(reward) + self.coef * (self._d - d), d
        info["distance"] = d
        return obs, reward, terminated, truncated, info


class LeftArmDeltaAction(gym.ActionWrapper):
    """Action = 7 left-arm joint deltas in [-1, 1] (times `scale` rad, added to the current joint
    targets); every other part of the 23-D action stays at the reset pose."""

    def __init__(self, env: gym.Env, scale: float = 0.1):
        super().__init__(env)
        from behavior_gym.backends.mujoco.robot import reset_action

        self.scale = float(scale)
        self.part = ACTION_PART["left_arm"]
        self._hold = reset_action()
        self._full = self._hold.copy()
        self.action_space = spaces.Box(-1.0, 1.0, (self.part.dim,), np.float32)

    def reset(self, **kwargs):
        self._full = self._hold.copy()
        return self.env.reset(**kwargs)

    def action(self, action: np.ndarray) -> np.ndarray:
        delta = self.scale * np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        sl = self.part.slice
        self._full[sl] = np.clip(self._full[sl] + delta, self.part.low, self.part.high)
        return self._full.copy()


def make_reach_env(max_steps: int = 40, image_size: int = 16, scale: float = 0.1, shaping: float = 10.0,
                   success_bonus: float = 1.0, **task_kwargs) -> gym.Env:
    """`Behavior-R1Pro-v0` on `ReachTask` with the vector observation, left-arm delta actions and
    distance shaping (`shaping` = 0: the env's own graded-goal reward only) plus `success_bonus`.

    Cameras are rendered only at reset and at the episode's end (`obs_every` = the episode length) at
    `image_size` pixels: the policy does not look at them.
    """
    from behavior_gym.env import BehaviorR1ProEnv

    env = BehaviorR1ProEnv(ReachTask(max_steps=max_steps, **task_kwargs), image_size=image_size,
                           obs_every=max_steps + 1, render_mode=None, success_bonus=success_bonus)
    env = ReachObservation(env)
    if shaping:
        env = ReachShaping(env, shaping)
    return LeftArmDeltaAction(env, scale=scale)
