"""Behavior-R1Pro-v0 on BEHAVIOR-1K's OmniGibson (Isaac Sim).

One simulator per process (Isaac Sim's Kit app is a process singleton and `og.shutdown()` ends
it): vector envs must put each env in its own process (`SubprocVecEnv`, Ray env workers), and
env processes on GPUs counted from 0. Cannot run on machines without Isaac Sim; the mapping and
config code it uses are tested on data shaped exactly like OmniGibson's.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from behavior_gym.backends.base import Backend
from behavior_gym.backends.omnigibson import config as C
from behavior_gym.backends.omnigibson import mapping as M
from behavior_gym.backends.omnigibson.environment import require_omnigibson
from behavior_gym.tasks.base import GoalStatus, TaskInfo

log = logging.getLogger(__name__)
_ENV_IN_PROCESS = False


def activity_instruction(task: str) -> str:
    """An instruction generated from the activity's BDDL goal (the embedded backend's generator)."""
    from behavior_gym.tasks.bddl_task import load_conditions
    from behavior_gym.tasks.instructions import goal_instruction

    conds = load_conditions(task)
    return goal_instruction(conds.parsed_goal_conditions, conds.parsed_objects, conds.parsed_initial_conditions)


def apply_task_instance(og, env, tro_state: dict, settle_steps: int = 25) -> None:
    """Load a challenge instance's task-relevant object states (and robot pose) into a reset env,
    settle it, and make it the scene's initial state — the 2025 evaluator's procedure."""
    import torch

    def to_torch(x):
        if isinstance(x, dict):
            return {k: to_torch(v) for k, v in x.items()}
        if isinstance(x, list):
            return torch.tensor(x) if x and all(isinstance(v, (int, float)) for v in x) else [to_torch(v) for v in x]
        return x

    robot = env.robots[0]
    for key, state in to_torch(tro_state).items():
        if key == "robot_poses":
            pose = state[robot.model_name][0]
            robot.set_position_orientation(pose["position"], pose["orientation"])
            env.scene.write_task_metadata(key=key, data=state)
        else:
            env.task.object_scope[key].load_state(state, serialized=False)
    for _ in range(settle_steps):  # loading a state can leave small objects jittering
        og.sim.step_physics()
        for entity in env.task.object_scope.values():
            if not entity.is_system and entity.exists:
                entity.keep_still()
    env.scene.update_initial_file()
    env.scene.reset()


class OmniGibsonBackend(Backend):
    name = "omnigibson"

    def __init__(self, task: str, image_size: int = 224, instance_id: int = 0, max_steps: int | None = None,
                 r_potential: float = 1.0, gpu_id: int | None = None, instruction: str | None = None,
                 **config_overrides):
        global _ENV_IN_PROCESS
        require_omnigibson()
        if _ENV_IN_PROCESS:
            raise RuntimeError("an OmniGibson env already lives in this process (Isaac Sim allows one simulator per "
                               "process): run each env in its own process (SubprocVecEnv or Ray env workers)")
        if gpu_id is not None:
            os.environ.setdefault("OMNIGIBSON_GPU_ID", str(gpu_id))
        os.environ.setdefault("OMNIGIBSON_HEADLESS", "1")
        import omnigibson as og
        from omnigibson.macros import gm

        gm.HEADLESS = True
        gm.USE_GPU_DYNAMICS = False
        gm.ENABLE_OBJECT_STATES = True
        gm.ENABLE_TRANSITION_RULES = True
        max_steps = int(max_steps or C.default_max_steps(task))
        instruction = instruction or activity_instruction(task)
        self.task_info = TaskInfo(task, "behavior", instruction, max_steps, backends=("omnigibson", "mujoco"))
        # Challenge instances > 0 are loaded over the scene's cached instance 0 (the evaluator's way).
        self.config = C.build_og_config(task, image_size=image_size, instance_id=0,
                                        max_steps=max_steps + 1, r_potential=r_potential, **config_overrides)
        self.instance_id = instance_id
        self.tro_state = None
        if instance_id > 0:  # instance 0 is the scene's cached instance; others come from the challenge set
            path = C.tro_state_path(task, instance_id, self.config["scene"]["scene_model"])
            if not path.is_file():
                raise FileNotFoundError(
                    f"task instance {instance_id} of {task!r} needs {path}; download the 2025 challenge task "
                    "instances (omnigibson.utils.asset_utils.download_2025_challenge_task_instances()) or use "
                    "instance_id=0")
            with open(path) as f:
                self.tro_state = json.load(f)
        self._og = og
        self.env = og.Environment(configs=self.config)
        _ENV_IN_PROCESS = True
        robot = self.env.robots[0]
        head = robot.sensors.get(C.HEAD_CAMERA)
        if head is not None:
            head.horizontal_aperture = C.HEAD_APERTURE
        # A heavy base, as during BEHAVIOR's data collection (HeavyRobotWrapper), keeps it from tipping.
        with og.sim.stopped():
            robot.base_footprint_link.mass = 250.0
        self._obs: dict = {}
        self._info: dict = {}

    def reset(self, rng: np.random.Generator) -> None:
        if self.tro_state is not None:
            self.env.reset()
            apply_task_instance(self._og, self.env, self.tro_state)
        self._obs, self._info = self.env.reset()

    def step(self, action: np.ndarray) -> None:
        self._obs, _reward, _term, _trunc, self._info = self.env.step(action)

    def proprio(self) -> np.ndarray:
        return M.proprio_from_obs(self._obs)

    def render_cameras(self, out: np.ndarray) -> np.ndarray:
        return M.map_images(self._obs, out)

    def goal_status(self) -> GoalStatus:
        task = self.env.task
        cond = getattr(task, "_termination_conditions", {}).get("predicate")
        status = getattr(cond, "goal_status", None) or self._info.get("goal_status")
        if status is None:  # before the first step: evaluate directly
            from bddl.activity import evaluate_goal_conditions

            _, status = evaluate_goal_conditions(task.activity_goal_conditions)
        names = getattr(task, "activity_natural_language_goal_conditions", None)
        sat, unsat = M.goal_status_names(status, names)
        return GoalStatus(satisfied=sat, unsatisfied=unsat)

    def close(self) -> None:
        global _ENV_IN_PROCESS
        if getattr(self, "env", None) is not None:
            self.env.close()
            self.env = None
            _ENV_IN_PROCESS = False

