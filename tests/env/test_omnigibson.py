"""The OmniGibson backend's config, mappings and environment checks, on OmniGibson-shaped data."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from behavior_gym.backends.mujoco.robot import reset_action
from behavior_gym.backends.omnigibson import config as C
from behavior_gym.backends.omnigibson import environment as E
from behavior_gym.backends.omnigibson import mapping as M
from behavior_gym.spaces import PROPRIO_SLICES

from . import fake_omnigibson


def test_config_has_every_spec_key():
    cfg = C.build_og_config("turning_on_radio", image_size=224, instance_id=7, max_steps=4320, r_potential=1.0,
                            scene_model="house_double_floor_lower")
    assert {k: cfg["env"][k] for k in C.FREQUENCIES} == {"action_frequency": 30, "rendering_frequency": 30,
                                                         "physics_frequency": 120}
    robot = cfg["robots"][0]
    assert robot["type"] == "R1Pro" and robot["name"] == "robot_r1"
    assert robot["action_normalize"] is False and robot["grasping_mode"] == "assisted"
    assert robot["sensor_config"]["VisionSensor"]["sensor_kwargs"] == {"image_height": 224, "image_width": 224}
    physical = C.build_og_config("turning_on_radio", grasping_mode="physical", scene_model="Rs_int")
    assert physical["robots"][0]["grasping_mode"] == "physical"  # gym.make(..., grasping_mode=) reaches it
    assert robot["proprio_obs"] == list(C.PROPRIO_KEYS)
    assert robot["reset_joint_pos"][6:10] == [1.025, -1.45, -0.47, 0.0] and robot["reset_joint_pos"][-4:] == [0.05] * 4
    ctrl = robot["controller_config"]
    assert ctrl["base"]["name"] == "HolonomicBaseJointController" and ctrl["base"]["motor_type"] == "velocity"
    assert ctrl["base"]["command_output_limits"] == [[-0.75, -0.75, -1.0], [0.75, 0.75, 1.0]]
    for part in ("trunk", "arm_left", "arm_right"):
        assert ctrl[part]["name"] == "JointController" and ctrl[part]["motor_type"] == "position"
        assert ctrl[part]["use_delta_commands"] is False and ctrl[part]["command_input_limits"] is None
    for part in ("gripper_left", "gripper_right"):
        assert ctrl[part]["name"] == "MultiFingerGripperController" and ctrl[part]["mode"] == "smooth"
    # Controller order in the dict is OmniGibson's action order (base, trunk, arm_left, gripper_left, ...).
    task = cfg["task"]
    assert task == {"type": "BehaviorTask", "activity_name": "turning_on_radio", "activity_definition_id": 0,
                    "activity_instance_id": 7, "online_object_sampling": False, "use_presampled_robot_pose": True,
                    "termination_config": {"max_steps": 4320}, "reward_config": {"r_potential": 1.0},
                    "include_obs": False}
    assert cfg["scene"]["scene_model"] == "house_double_floor_lower"


def test_config_reads_challenge_metadata(tmp_path):
    meta = tmp_path / "2025-challenge-task-instances" / "metadata"
    meta.mkdir(parents=True)
    (meta / "available_tasks.yaml").write_text(
        "picking_up_trash:\n  scene_model: house_single_floor\n  load_room_instances: [kitchen_0, living_room_0]\n"
        "  robot_start_position: [1.0, 2.0, 0.0]\n")
    cfg = C.build_og_config("picking_up_trash", data_path=str(tmp_path))
    assert cfg["scene"]["scene_model"] == "house_single_floor"
    assert cfg["scene"]["load_room_instances"] == ["kitchen_0", "living_room_0"]
    assert cfg["robots"][0]["position"] == [1.0, 2.0, 0.0]


def test_default_step_limits_follow_the_2025_evaluator():
    assert C.default_max_steps("turning_on_radio") == 4320
    assert C.default_max_steps("picking_up_trash") == 10560
    assert C.default_max_steps("some_other_activity") == 500
    assert len(C.CHALLENGE_HUMAN_SECONDS) == 50


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("flat", [False, True])
def test_observation_mapping(as_torch, flat):
    size = 16
    head = np.zeros((size, size, 4), np.uint8)
    head[..., 0], head[..., 1], head[..., 2], head[..., 3] = 10, 20, 30, 255
    left, right = head.copy(), head.copy()
    left[..., 0], right[..., 0] = 100, 200
    proprio = np.arange(61, dtype=np.float32)
    conv = (lambda x: torch.from_numpy(x)) if as_torch else (lambda x: x)
    names = (C.HEAD_CAMERA, *C.WRIST_CAMERAS)
    if flat:
        obs = {f"robot_r1::{n}::rgb": conv(img) for n, img in zip(names, (head, left, right))}
        obs["robot_r1::proprio"] = conv(proprio)
    else:
        obs = {"robot_r1": {n: {"rgb": conv(img)} for n, img in zip(names, (head, left, right))}}
        obs["robot_r1"]["proprio"] = conv(proprio)
    out = np.zeros((3, 3, size, size), np.uint8)
    M.map_images(obs, out)
    assert out.shape == (3, 3, size, size)
    assert out[0, :, 0, 0].tolist() == [10, 20, 30]  # RGBA HWC -> RGB CHW
    assert out[1, 0, 0, 0] == 100 and out[2, 0, 0, 0] == 200  # head, left wrist, right wrist
    np.testing.assert_array_equal(M.proprio_from_obs(obs), proprio)


def test_proprio_from_dict_uses_our_order():
    sizes = [3] + [7, 7, 3, 4, 2, 2] * 2 + [4, 4]
    d = {k: np.full(n, i, np.float32) for i, (k, n) in enumerate(zip(C.PROPRIO_KEYS, sizes))}
    p = M.map_proprio(d)
    assert p.shape == (61,)
    assert (p[PROPRIO_SLICES["base_qvel"]] == 0).all() and (p[PROPRIO_SLICES["left_eef_quat"]] == 4).all()
    assert (p[PROPRIO_SLICES["right_joint_qpos"]] == 7).all() and (p[PROPRIO_SLICES["trunk_qvel"]] == 14).all()


def test_mapping_errors_are_clear():
    with pytest.raises(ValueError, match="expected 61.*proprio_obs"):
        M.map_proprio(np.zeros(256))
    with pytest.raises(KeyError, match="lacks 'eef_left_quat'"):
        M.map_proprio({k: np.zeros(n) for k, n in zip(C.PROPRIO_KEYS[:4], (3, 7, 7, 3))})
    with pytest.raises(ValueError, match="'arm_left_qpos' has 3 values, expected 7"):
        M.map_proprio({k: np.zeros(3) for k in C.PROPRIO_KEYS})
    with pytest.raises(KeyError, match="robot_r1::robot_r1:zed_link:Camera:0::rgb"):
        M.map_images({"robot_r1": {}}, np.zeros((3, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="sensor_config"):
        M.rgba_to_chw(np.zeros((32, 32, 4), np.uint8), size=16)


def test_success_and_goal_status_from_info():
    assert M.success_from_info({"done": {"success": True}})
    assert not M.success_from_info({"done": {"success": False}})
    # Some builds report done only through the termination conditions.
    assert M.success_from_info({"done": {"termination_conditions": {"predicate": {"done": True}}}})
    sat, unsat = M.goal_status_names({"satisfied": [1], "unsatisfied": [0, 2]}, ["a", "b"])
    assert sat == ["b"] and unsat == ["a", "goal[2]"]


def test_version_support_rules():
    assert E.supported_version("3.7.2", (3, 10)) is None
    assert E.supported_version("3.8.0", (3, 11)) is None
    assert E.supported_version("3.9.1", (3, 11)) is None
    assert "too old" in E.supported_version("1.1.1", (3, 10))
    assert "Python 3.10" in E.supported_version("3.7.1", (3, 11))
    assert "Python 3.11" in E.supported_version("3.8.0", (3, 10))


def test_environment_checks(tmp_path, monkeypatch):
    assert "OMNIGIBSON_DATA_PATH is not set" in E.check_data_path({}).message
    c = E.check_data_path({"OMNIGIBSON_DATA_PATH": str(tmp_path)})
    assert not c.ok and "behavior-1k-assets" in c.message and "omnigibson-robot-assets" in c.message
    for f in E.ASSET_FOLDERS:
        (tmp_path / f).mkdir()
    c = E.check_data_path({"OMNIGIBSON_DATA_PATH": str(tmp_path)})
    assert c.ok and not c.fatal and "2025-challenge-task-instances" in c.message
    (tmp_path / E.CHALLENGE_FOLDER).mkdir()
    assert E.check_data_path({"OMNIGIBSON_DATA_PATH": str(tmp_path)}).fatal
    assert "ISAAC_PATH" in E.check_isaac({}).message
    assert not E.check_isaac({"ISAAC_PATH": str(tmp_path / "nope")}).ok
    assert E.check_isaac({"ISAAC_PATH": str(tmp_path)}).ok
    assert not E.check_gpu([]).ok
    h100 = E.check_gpu(["NVIDIA H100 80GB HBM3"])
    assert h100.ok and not h100.fatal and "artefacts" in h100.message
    assert E.check_gpu(["NVIDIA GeForce RTX 4090"]).fatal


def test_missing_omnigibson_says_what_to_install_and_set():
    with pytest.raises(E.OmniGibsonUnavailable) as err:
        gym.make("Behavior-R1Pro-v0", task="turning_on_radio", backend="omnigibson")
    msg = str(err.value)
    assert "BEHAVIOR-1K" in msg and "OMNIGIBSON_DATA_PATH" in msg and "ISAAC_PATH" in msg
    assert "backend='mujoco'" in msg


def test_auto_backend_falls_back_to_mujoco():
    env = gym.make("Behavior-R1Pro-v0", task="pick_and_place", backend="auto", image_size=32)
    assert env.unwrapped.backend.name == "mujoco"
    env.close()


def test_env_contract_on_omnigibson_shaped_data(monkeypatch):
    fake_omnigibson.install(monkeypatch)
    env = gym.make("Behavior-R1Pro-v0", task="turning_on_radio", backend="omnigibson", image_size=32)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["head_rgb"].shape == (3, 32, 32) and obs["wrist_rgb"].shape == (2, 3, 32, 32)
    assert obs["head_rgb"][0, 1, 1] == 40 and obs["wrist_rgb"][1, 0, 1, 1] == 120
    np.testing.assert_array_equal(obs["proprio"], np.arange(61, dtype=np.float32))
    assert obs["instruction"] == "Turn on the radio."
    assert info["goal_status"]["unsatisfied"] == ["the radio receiver is toggled on"]
    og_env = env.unwrapped.backend.env
    assert og_env.robots[0].sensors[C.HEAD_CAMERA].horizontal_aperture == C.HEAD_APERTURE
    assert og_env.config["task"]["termination_config"]["max_steps"] == 4321
    a = reset_action()
    obs, r, term, trunc, info = env.step(a)
    assert not term and r == 0.0 and info["episode_len"] == 1
    a[22] = -1.0  # the fake world's "radio" turns on
    obs, r, term, trunc, info = env.step(a)
    assert term and info["success"] and info["q_score"] == 1.0 and r == pytest.approx(1.0)
    # One simulator per process.
    with pytest.raises(RuntimeError, match="one simulator per"):
        gym.make("Behavior-R1Pro-v0", task="turning_on_radio", backend="omnigibson", image_size=32)
    env.close()
    assert fake_omnigibson.Environment.instances == 0


def test_list_tasks_per_backend():
    import behavior_gym
    from behavior_gym.backends.omnigibson.tasks import list_omnigibson_tasks

    og_tasks = list_omnigibson_tasks()
    assert len(og_tasks) == 50 and og_tasks[0].name == "turning_on_radio" and og_tasks[0].max_steps == 4320
    assert all(t.instruction for t in og_tasks)
    assert [t.name for t in behavior_gym.list_tasks("auto")] == [t.name for t in behavior_gym.list_tasks()]


def test_challenge_instance_is_loaded_from_its_tro_state(monkeypatch, tmp_path):
    import json

    fake_omnigibson.install(monkeypatch)
    monkeypatch.setenv("OMNIGIBSON_DATA_PATH", str(tmp_path))
    path = C.tro_state_path("turning_on_radio", 3, C.DEFAULT_SCENE)
    assert path.name == "house_single_floor_task_turning_on_radio_0_3_template-tro_state.json"
    with pytest.raises(FileNotFoundError, match="download_2025_challenge_task_instances"):
        gym.make("Behavior-R1Pro-v0", task="turning_on_radio", backend="omnigibson", instance_id=3, image_size=32)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "robot_poses": {"r1pro": [{"position": [1.0, 2.0, 0.0], "orientation": [0.0, 0.0, 0.0, 1.0]}]},
        "radio_receiver.n.01_1": {"pos": [0.5, 0.5, 0.8]},
    }))
    env = gym.make("Behavior-R1Pro-v0", task="turning_on_radio", backend="omnigibson", instance_id=3, image_size=32)
    env.reset(seed=0)
    og_env = env.unwrapped.backend.env
    assert og_env.config["task"]["activity_instance_id"] == 0  # the cached instance, overwritten below
    assert og_env.robots[0].base_footprint_link.mass == 250.0
    assert og_env.robots[0].pose[0].tolist() == [1.0, 2.0, 0.0]
    radio = og_env.task.object_scope["radio_receiver.n.01_1"]
    assert radio.loaded["pos"].tolist() == pytest.approx([0.5, 0.5, 0.8]) and radio.still == 25
    assert og_env.scene.initial_file_updates == 1 and og_env.scene.resets == 1
    env.close()
