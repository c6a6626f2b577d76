"""A stand-in for the `omnigibson` package, producing data shaped exactly like OmniGibson's.

Isaac Sim cannot run here. This module lets the real backend code (config, construction,
observation/info mapping, goal status) run end to end: `og.Environment(configs)` returns obs
dicts keyed `obs["robot_r1"]["robot_r1:<link>:Camera:0"]["rgb"]` as RGBA HWC uint8 torch tensors,
`obs["robot_r1"]["proprio"]` as a flat float32 tensor in `proprio_obs` order, and infos with
`info["done"]["success"]`, as OmniGibson 3.7/3.8 do.
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
import torch


class _Sensor:
    horizontal_aperture = 20.955


class _Link:
    mass = 70.0


class _Robot:
    model_name = "r1pro"

    def __init__(self, cfg):
        self.name = cfg["name"]
        self.base_footprint_link = _Link()
        self.pose = None
        self.sensors = {f"{self.name}:{link}:Camera:0": _Sensor()
                        for link in ("zed_link", "left_realsense_link", "right_realsense_link")}

    def set_position_orientation(self, position, orientation):
        self.pose = (position, orientation)


class _PredicateGoal:
    def __init__(self):
        self.goal_status = None


class _Entity:
    is_system = False
    exists = True

    def __init__(self):
        self.loaded = None
        self.still = 0

    def load_state(self, state, serialized=False):
        assert serialized is False
        self.loaded = state

    def keep_still(self):
        self.still += 1


class _Scene:
    def __init__(self):
        self.metadata, self.initial_file_updates, self.resets = {}, 0, 0

    def write_task_metadata(self, key, data):
        self.metadata[key] = data

    def update_initial_file(self):
        self.initial_file_updates += 1

    def reset(self):
        self.resets += 1


class _Task:
    def __init__(self):
        self.object_scope = {"radio_receiver.n.01_1": _Entity(), "table.n.02_1": _Entity()}
        self._termination_conditions = {"predicate": _PredicateGoal()}
        self.activity_natural_language_goal_conditions = ["the radio receiver is toggled on"]
        self.activity_goal_conditions = []


class Environment:
    """Steps a trivial world: the 'radio' turns on when the right gripper command is -1."""

    instances = 0

    def __init__(self, configs):
        self.config = configs
        self.robots = [_Robot(configs["robots"][0])]
        self.task = _Task()
        self.scene = _Scene()
        size = configs["robots"][0]["sensor_config"]["VisionSensor"]["sensor_kwargs"]["image_height"]
        self.size = size
        self.t = 0
        self.last_action = np.zeros(23, np.float32)
        Environment.instances += 1

    def _obs(self):
        r = self.robots[0].name
        obs = {r: {}}
        for i, name in enumerate(self.robots[0].sensors):
            img = torch.full((self.size, self.size, 4), 40 * (i + 1), dtype=torch.uint8)
            img[..., 3] = 255
            img[0, 0, 0] = self.t % 256
            obs[r][name] = {"rgb": img}
        proprio = torch.arange(61, dtype=torch.float32) + self.t
        obs[r]["proprio"] = proprio
        return obs

    def _status(self):
        on = self.last_action[22] < -0.5
        return {"satisfied": [0] if on else [], "unsatisfied": [] if on else [0]}

    def reset(self):
        self.t = 0
        self.last_action[:] = 0
        self.task._termination_conditions["predicate"].goal_status = self._status()
        return self._obs(), {"obs_info": {}}

    def step(self, action):
        assert action.shape == (23,)
        self.t += 1
        self.last_action = np.asarray(action, np.float32)
        status = self._status()
        self.task._termination_conditions["predicate"].goal_status = status
        success = not status["unsatisfied"]
        info = {"done": {"success": success, "termination_conditions": {"predicate": {"done": success,
                                                                                      "success": success}}}}
        return self._obs(), float(success), success, False, info

    def close(self):
        Environment.instances -= 1


class _Sim:
    physics_steps = 0

    @contextlib.contextmanager
    def stopped(self):
        yield

    def step_physics(self):
        _Sim.physics_steps += 1


def install(monkeypatch):
    """Put the fake package in sys.modules and make the environment checks pass."""
    og = types.ModuleType("omnigibson")
    og.Environment = Environment
    og.sim = _Sim()
    macros = types.ModuleType("omnigibson.macros")
    macros.gm = types.SimpleNamespace()
    monkeypatch.setitem(__import__("sys").modules, "omnigibson", og)
    monkeypatch.setitem(__import__("sys").modules, "omnigibson.macros", macros)
    import behavior_gym.backends.omnigibson.backend as backend

    monkeypatch.setattr(backend, "require_omnigibson", lambda: None)
    monkeypatch.setattr(backend, "_ENV_IN_PROCESS", False)
    return og
