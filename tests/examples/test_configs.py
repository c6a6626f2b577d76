"""Every config composes; every key of the user guide works; bad configs fail before anything starts,
naming the key and the fix."""

import pytest

from algorithms.distributed.config import ConfigError, check_run_config, to_run_config

CONFIGS = ("behavior_ppo_openvlaoft", "behavior_grpo_openvlaoft", "behavior_ppo_openvlaoft_embedded",
           "behavior_grpo_openvlaoft_embedded")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_composes_and_type_checks(compose, name):
    cfg = compose(name)
    c = to_run_config(cfg)
    assert c.runner.task_type == "embodied" and c.actor.model.model_type == "openvla_oft"
    assert c.video_cfg.video_base_dir == f"{c.runner.logger.log_path}/video/train"
    assert c.algorithm.adv_type == ("grpo" if "grpo" in name else "gae")
    assert c.runner.logger.experiment_name == name


@pytest.mark.parametrize("name", [n for n in CONFIGS if n.endswith("_embedded")])
def test_embedded_configs_run_on_a_cpu_machine(compose, name):
    c = to_run_config(compose(name))
    placement = check_run_config(c, gpus_per_node=0)
    assert placement.layout == "collocated" and not placement.on_gpus
    assert c.env.train.backend == "mujoco" and c.actor.model.preset == "tiny"
    assert c.env.train.total_num_envs % c.rollout.pipeline_stage_num == 0


@pytest.mark.parametrize("name", [n for n in CONFIGS if not n.endswith("_embedded")])
def test_real_configs_need_only_the_checkpoint_and_omnigibson(compose, name):
    """On an 8-GPU node the real configs are right except for what this machine lacks."""
    c = to_run_config(compose(name))
    assert c.env.train.backend == "omnigibson" and c.actor.model.precision == "bf16"
    with pytest.raises(ConfigError) as e:
        check_run_config(c, gpus_per_node=8)
    assert set(e.value.keys) <= {"actor.model.model_path", "env.train.backend"}
    assert "actor.model.model_path" in e.value.keys


@pytest.mark.parametrize("name", ["behavior_ppo_openvlaoft_skills", "behavior_grpo_openvlaoft_skills"])
def test_skills_configs_carry_run_13s_rl_recipe(compose, name, tmp_path):
    """The learning pipeline's RL configs: run 13's settings (README "Does it learn?"), valid on one GPU."""
    from algorithms.distributed.runner import trainer_kwargs

    (tmp_path / "config.json").write_text("{}")  # the SFT stage's model folder, as far as the check looks
    c = to_run_config(compose(name, [f"actor.model.model_path={tmp_path}"]))
    assert c.rollout.sampling_params.top_k == 3 and c.rollout.sampling_params.temperature_train == 1.0
    assert c.actor.optim.lr == 2e-5 and c.actor.global_batch_size == 128 and c.algorithm.update_epoch == 1
    assert trainer_kwargs(c)["desired_kl"] == c.algorithm.desired_kl
    assert c.actor.micro_batch_size == 64  # two micro-batches per optimizer step (1.7x faster than 32 on an H200)
    assert c.env.train.total_num_envs == 64 and c.env.train.backend == "mujoco"
    assert c.env.train.max_steps_per_rollout_epoch == (320 if "grpo" in name else 512)
    assert check_run_config(c, gpus_per_node=1).layout == "collocated"


@pytest.mark.parametrize("overrides,built,trained", [
    ([], "float32", True),  # full fine-tuning: the SFT checkpoint loads unrounded, trained in float32
    (["actor.model.is_lora=true"], "bfloat16", True),  # LoRA: the frozen base in bf16, the trainer casts adapters
    (["actor.model.master_weights=false"], "bfloat16", False),  # runs 1-14: trained in bf16
])
def test_the_actor_trains_float32_master_weights(compose, tmp_path, overrides, built, trained):
    from algorithms.distributed.runner import acting_copy_kwargs, trainer_kwargs

    (tmp_path / "config.json").write_text("{}")
    c = to_run_config(compose("behavior_ppo_openvlaoft_skills", [f"actor.model.model_path={tmp_path}", *overrides]))
    kwargs = trainer_kwargs(c)
    assert c.actor.model.precision == "bf16" and kwargs["bf16"] is None  # bf16 autocast on CUDA
    assert kwargs["policy_kwargs"]["torch_dtype"] == built and kwargs["master_weights"] is trained
    # rollout workers' copies only infer: in the compute precision whatever the trainer holds
    assert acting_copy_kwargs(c, kwargs["policy_kwargs"])["torch_dtype"] == "bfloat16"


def test_user_guide_keys(compose):
    """The keys the user guide names, set on the command line."""
    c = to_run_config(compose("behavior_ppo_openvlaoft_embedded", [
        "cluster.num_nodes=1", "++cluster.component_placement={env: 0-1, rollout: 2-5, actor: 6-7}",
        "rollout.pipeline_stage_num=4", "video_cfg.save_video=false", "video_cfg.info_on_video=false",
        "runner.task_type=embodied", "runner.logger.log_path=../results", "runner.logger.project_name=rlinf",
        "runner.logger.experiment_name=test_behavior", "runner.logger.logger_backends=[tensorboard,wandb]"]))
    assert c.rollout.pipeline_stage_num == 4 and not c.video_cfg.save_video and not c.video_cfg.info_on_video
    assert c.video_cfg.video_base_dir == "../results/video/train"
    assert c.runner.logger.logger_backends == ["tensorboard", "wandb"]
    placement = check_run_config(c, gpus_per_node=8)
    assert placement.layout == "disaggregated"


def problems(compose, overrides, name="behavior_ppo_openvlaoft_embedded", gpus=0):
    with pytest.raises(ConfigError) as e:
        check_run_config(to_run_config(compose(name, overrides)), gpus_per_node=gpus)
    return dict(e.value.problems), str(e.value)


@pytest.mark.parametrize("overrides,key,match", [
    (["++cluster.component_placement={env: 0-3, rollout: 4-8, actor: 0-7}"], "cluster.component_placement.rollout",
     "GPU 8 does not exist"),
    (["rollout.pipeline_stage_num=3"], "rollout.pipeline_stage_num", "does not divide env.train.total_num_envs=4"),
    (["actor.model.preset=null", "actor.model.image_size=null", "actor.model.model_path=/no/such/ckpt"],
     "actor.model.model_path", "not a model folder"),
    (["actor.model.preset=huge"], "actor.model.preset", "unknown preset"),
    (["env.train.total_num_envs=3", "rollout.pipeline_stage_num=1"], "env.train.total_num_envs",
     "cannot be shared evenly by 2 env workers"),
    (["runner.logger.logger_backends=[tensorboard,mlflow]"], "runner.logger.logger_backends", "unknown backend"),
    (["env.train.backend=isaac"], "env.train.backend", "unknown backend"),
    (["env.train.task=pick_and_plaec"], "env.train.task", "did you mean pick_and_place"),
    (["actor.global_batch_size=30"], "actor.micro_batch_size", "does not divide actor.global_batch_size=30"),
    (["actor.global_batch_size=128", "actor.micro_batch_size=8"], "actor.global_batch_size", "more than the 64"),
    (["env.train.max_steps_per_rollout_epoch=100"], "env.train.max_steps_per_rollout_epoch", "multiple of"),
    (["actor.model.image_size=100"], "actor.model.image_size", "14-pixel patch"),
    (["algorithm.adv_type=ppo"], "algorithm.adv_type", "'gae' trains with PPO"),
    (["runner.resume_dir=/no/such/run"], "runner.resume_dir", "does not exist"),
    (["env.train.reward_shaping=-1"], "env.train.reward_shaping", "must be >= 0"),
    (["env.train.reward_shaping=1", "env.train.task=open_drawer"], "env.train.reward_shaping", "none of the training"),
    (["env.train.layout=shelf"], "env.train.layout", "not a skill layout"),
    (["actor.optim.lr_warmup_steps=-1"], "actor.optim.lr_warmup_steps", "must be >= 0"),
    (["actor.optim.critic_warmup_steps=-2"], "actor.optim.critic_warmup_steps", "must be >= 0"),
    (["algorithm.desired_kl=0"], "algorithm.desired_kl", "must be > 0, or null"),
])
def test_bad_values_name_their_key(compose, overrides, key, match):
    found, text = problems(compose, overrides, gpus=8 if "GPU" in match else 0)
    assert key in found, text
    assert match in found[key]


def test_gpu_ids_on_a_machine_without_gpus(compose):
    found, _ = problems(compose, ["++cluster.component_placement={env: 0-3, rollout: 4-7, actor: 0-7}"])
    assert "no GPUs" in found["cluster.component_placement.env"]
    # the fix it names is a command-line override Hydra accepts, and it places everything on the CPUs
    fix = found["cluster.component_placement.env"].split("run on CPUs with ")[1]
    config = to_run_config(compose("behavior_ppo_openvlaoft", ["env.train.backend=mujoco", fix]))
    assert dict(config.cluster.component_placement) == {"env": "all", "rollout": "all", "actor": "all"}


def test_grpo_group_size_must_divide_the_envs(compose):
    found, _ = problems(compose, ["algorithm.group_size=3"], name="behavior_grpo_openvlaoft_embedded")
    assert "does not divide" in found["algorithm.group_size"]


def test_omnigibson_env_workers_start_from_gpu_0(compose):
    found, _ = problems(compose, ["cluster.component_placement={env: 4-7, rollout: 0-3, actor: 0-7}"],
                        name="behavior_ppo_openvlaoft", gpus=8)
    assert "GPUs from 0" in found["cluster.component_placement.env"]


def test_all_problems_are_reported_at_once(compose):
    found, text = problems(compose, ["rollout.pipeline_stage_num=3", "actor.model.preset=huge"])
    assert {"rollout.pipeline_stage_num", "actor.model.preset"} <= set(found)
    assert "nothing was started" in text


@pytest.mark.parametrize("raw,key,match", [
    ({"rollout": {"pipline_stage_num": 2}}, "rollout.pipline_stage_num", "did you mean rollout.pipeline_stage_num"),
    ({"env": {"pipeline_stage_num": 2}}, "env.pipeline_stage_num", "this key is rollout.pipeline_stage_num here"),
    ({"env": {"train": {"video_cfg": {"save_video": True}}}}, "env.train.video_cfg", "video_cfg here"),
    ({"runner": {"loger": {}}}, "runner.loger", "did you mean runner.logger"),
    ({"clusterr": {}}, "clusterr", "did you mean cluster"),
])
def test_unknown_keys_are_refused_with_the_closest_key(raw, key, match):
    with pytest.raises(ConfigError) as e:
        to_run_config(raw)
    found = dict(e.value.problems)
    assert key in found and match in found[key], e.value


def test_values_of_the_wrong_type_name_their_key(compose):
    cfg = compose("behavior_ppo_openvlaoft_embedded", ["actor.micro_batch_size=two"])
    with pytest.raises(ConfigError) as e:
        to_run_config(cfg)
    assert e.value.keys == ["actor.micro_batch_size"]


def test_hydra_refuses_unknown_overrides(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="pipline_stage_num"):
        compose("behavior_ppo_openvlaoft_embedded", ["rollout.pipline_stage_num=2"])


# ---------------------------------------------------------------------------------------- rollout.fast_inference
@pytest.mark.parametrize("name", CONFIGS)
def test_fast_inference_is_off_by_default(compose, name):
    from algorithms.distributed.runner import trainer_kwargs

    c = to_run_config(compose(name))
    f = c.rollout.fast_inference
    assert not f.enabled and f.kwargs() is None and not f.fp8 and f.cuda_graphs is None
    assert c.algorithm.recompute_log_probs is None and trainer_kwargs(c)["recompute_log_probs"] is False


@pytest.mark.parametrize("overrides,expected", [
    (["rollout.fast_inference.enabled=true"], True),
    (["rollout.fast_inference.enabled=true", "algorithm.recompute_log_probs=false"], False),
    (["algorithm.recompute_log_probs=true"], True),
])
def test_recompute_log_probs_follows_fast_inference(compose, overrides, expected):
    from algorithms.distributed.runner import trainer_kwargs

    c = to_run_config(compose("behavior_ppo_openvlaoft_embedded", overrides))
    check_run_config(c, gpus_per_node=0)
    assert trainer_kwargs(c)["recompute_log_probs"] is expected


def test_fast_inference_kwargs(compose):
    c = to_run_config(compose("behavior_ppo_openvlaoft_embedded", [
        "rollout.fast_inference.enabled=true", "rollout.fast_inference.compile=false"]))
    check_run_config(c, gpus_per_node=0)
    assert c.rollout.fast_inference.kwargs() == {"compile": False, "cuda_graphs": None, "mode": None, "fp8": False,
                                                 "fp8_vision": False}


FI = "rollout.fast_inference"
ON = f"{FI}.enabled=true"


@pytest.mark.parametrize("overrides,key,match", [
    ([f"{FI}.fp8=true"], f"{FI}.fp8", "which is off"),
    ([ON, f"{FI}.fp8=true"], f"{FI}.fp8", "this cluster has no GPUs"),
    ([ON, f"{FI}.fp8_vision=true"], f"{FI}.fp8_vision", f"needs {FI}.fp8=true"),
    ([ON, f"{FI}.cuda_graphs=true"], f"{FI}.cuda_graphs", "this cluster has none"),
    ([ON, f"{FI}.mode=fastest"], f"{FI}.mode", "unknown torch.compile mode 'fastest'"),
    ([ON, f"{FI}.mode=max-autotune", f"{FI}.compile=false"], f"{FI}.mode", "compile=false"),
    ([ON, f"{FI}.mode=reduce-overhead"], f"{FI}.mode", "cuda_graphs=false"),
])
def test_bad_fast_inference_settings_name_their_key(compose, overrides, key, match):
    found, text = problems(compose, overrides)
    assert key in found, text
    assert match in found[key]


def test_fp8_needs_a_gpu_that_runs_fp8_gemms(compose, monkeypatch):
    """Checked at the start with this machine's GPU (standing for the cluster's), not in a worker."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    found, _ = problems(compose, [ON, f"{FI}.fp8=true"], name="behavior_ppo_openvlaoft", gpus=8)
    assert "A100 has compute capability 8.0" in found[f"{FI}.fp8"]
    assert "set rollout.fast_inference.fp8=false" in found[f"{FI}.fp8"]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    found, _ = problems(compose, [ON, f"{FI}.fp8=true"], name="behavior_ppo_openvlaoft", gpus=8)
    assert f"{FI}.fp8" not in found  # an H100: fine (what is left is this machine's lack of checkpoint / Isaac)
    # rollout sharing the actor's GPUs: the trainer's own policy would act, and FP8 would replace its weights
    found, _ = problems(compose, [ON, f"{FI}.fp8=true", "actor.model.precision=bf16"], gpus=1)
    assert "needs rollout workers with their own copy" in found[f"{FI}.fp8"]
    found, _ = problems(compose, [ON, f"{FI}.fp8=true", "actor.model.precision=fp32"],
                        name="behavior_ppo_openvlaoft", gpus=8)
    assert "actor.model.precision is 'fp32'" in found[f"{FI}.fp8"]


@pytest.mark.parametrize("value", ["maybe", 1.5])
def test_fast_inference_values_of_the_wrong_type(compose, value):
    with pytest.raises(ConfigError) as e:
        to_run_config(compose("behavior_ppo_openvlaoft_embedded", [f"{FI}.enabled={value}"]))
    assert e.value.keys == [f"{FI}.enabled"]
