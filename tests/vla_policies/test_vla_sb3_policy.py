"""The Stable-Baselines3 policy: the SB3 interface, re-scoring stored actions, PPO end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_helpers import CHUNK, INSTRUCTIONS, TinyBehaviorEnv, chunked_action_space, make_obs, observation_space

from behavior_gym.spaces import ACTION_DIM, ACTION_HIGH, ACTION_LOW
from vla_policies import OpenVLAOFTPolicy

NORM_STATS = {
    "behavior_turn_on_radio": {"action": {
        "q01": (0.8 * ACTION_LOW).tolist(), "q99": (0.8 * ACTION_HIGH).tolist(),
        "min": ACTION_LOW.tolist(), "max": ACTION_HIGH.tolist(),
        "mask": [True] * ACTION_DIM}},
    "behavior_picking_up_trash": {"action": {"q01": ACTION_LOW.tolist(), "q99": ACTION_HIGH.tolist()}},
}


def make_policy(**kwargs) -> OpenVLAOFTPolicy:
    kwargs.setdefault("preset", "tiny")
    torch.manual_seed(0)
    return OpenVLAOFTPolicy(observation_space(), chunked_action_space(), lambda _: 1e-3, **kwargs)


def test_forward_evaluate_and_predict_values():
    policy = make_policy()
    obs = make_obs(3)
    with torch.no_grad():
        actions, values, log_prob = policy(obs)
        values2, log_prob2, entropy = policy.evaluate_actions(obs, actions)
        assert torch.equal(values2, values) and torch.equal(policy.predict_values(obs), values)
    assert actions.shape == (3, CHUNK * ACTION_DIM) and actions.dtype == torch.float32
    assert values.shape == (3, 1) and log_prob.shape == (3,) and entropy.shape == (3,)
    # the stored action is re-scored exactly: PPO's first ratio is 1
    torch.testing.assert_close(log_prob2, log_prob, rtol=0, atol=1e-4)
    space = chunked_action_space()
    assert all(space.contains(a) for a in actions.numpy())  # no norm_stats: [-1, 1] -> the action bounds
    # step k of the chunk is at [k*23:(k+1)*23]
    tokens = policy.actions_to_tokens(actions).view(3, CHUNK, ACTION_DIM)
    assert tokens.min() >= policy.model.action_tokenizer.token_begin


def test_per_token_log_probs_and_entropy():
    policy = make_policy(temperature=1.3, top_k=40)
    obs = make_obs(2)
    with torch.no_grad():
        actions, _, lp_tok = policy(obs, per_token=True)
        _, lp, ent = policy.evaluate_actions(obs, actions)
        _, lp_tok2, ent_tok = policy.evaluate_actions(obs, actions, per_token=True)
        out = policy.model(**policy.prepare_inputs(obs))
    assert lp_tok.shape == ent_tok.shape == (2, CHUNK * ACTION_DIM)
    torch.testing.assert_close(lp_tok2.sum(-1), lp, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(ent_tok.sum(-1), ent, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(lp_tok2, lp_tok, rtol=0, atol=1e-5)
    # direct: log_softmax(top-k(logits / T)) at the stored token (bins 0/1 share a value)
    bins = policy.model.action_tokenizer.ids_to_bins(policy.actions_to_tokens(actions))
    x = out.action_logits / 1.3
    x = x.masked_fill(x < x.topk(40, -1).values[..., -1:], -torch.inf)
    p = x.softmax(-1)
    pv = torch.cat([p[..., :1] + p[..., 1:2], p[..., 2:]], -1)
    direct = pv.gather(-1, (bins - 1).clamp(min=0)[..., None]).squeeze(-1).log()
    torch.testing.assert_close(lp_tok2, direct, rtol=1e-4, atol=1e-4)


def test_greedy_actions_are_the_argmax_tokens():
    policy = make_policy()
    obs = make_obs(2)
    with torch.no_grad():
        actions, _, _ = policy(obs, deterministic=True)
        logits = policy.model(**policy.prepare_inputs(obs)).action_logits
    expected = policy.tokens_to_actions(policy.model.action_tokenizer.bins_to_ids(logits.argmax(-1)))
    assert torch.equal(actions, expected)
    single = {k: v[0].numpy() for k, v in obs.items()}  # SB3's predict on one unbatched observation
    action, _ = policy.predict(single, deterministic=True)
    assert action.shape == (CHUNK * ACTION_DIM,)
    np.testing.assert_allclose(action, np.clip(actions[0].numpy(), chunked_action_space().low,
                                               chunked_action_space().high))


def test_actions_tokens_round_trip_with_norm_stats_and_unnorm_key():
    stats = {k: {"action": {s: list(x) if isinstance(x, list) else x for s, x in v["action"].items()}}
             for k, v in NORM_STATS.items()}
    # the base's yaw rate never moved in the data: an empty range
    stats["behavior_turn_on_radio"]["action"]["q99"][2] = stats["behavior_turn_on_radio"]["action"]["q01"][2]
    policy = make_policy(norm_stats=stats, unnorm_key="behavior_turn_on_radio")
    assert policy._collapsed[2] and policy._collapsed[2 + ACTION_DIM] and not policy._collapsed[:2].any()
    g = torch.Generator().manual_seed(0)
    tok = policy.model.action_tokenizer
    ids = torch.randint(tok.token_begin, tok.vocab_end, (4, CHUNK * ACTION_DIM), generator=g)
    actions = policy.tokens_to_actions(ids)
    back = policy.actions_to_tokens(actions)
    decodes_same = tok.decode(back) == tok.decode(ids)
    assert decodes_same[:, ~policy._collapsed].all()
    lo, hi = np.tile(0.8 * ACTION_LOW, CHUNK), np.tile(0.8 * ACTION_HIGH, CHUNK)
    assert np.all(actions.numpy() >= lo - 1e-5) and np.all(actions.numpy() <= hi + 1e-5)
    with torch.no_grad():
        obs = make_obs(2)
        a, _, lp = policy(obs)
        _, lp2, ent = policy.evaluate_actions(obs, a, per_token=True)
    assert torch.all(lp2[:, policy._collapsed] == 0) and torch.all(ent[:, policy._collapsed] == 0)
    torch.testing.assert_close(lp2.sum(-1), lp, rtol=0, atol=1e-3)
    with pytest.raises(KeyError) as e:
        make_policy(norm_stats=NORM_STATS, unnorm_key="libero_10_no_noops")
    assert "behavior_picking_up_trash" in str(e.value) and "behavior_turn_on_radio" in str(e.value)


def test_instructions_from_float_buffers_and_text():
    policy = make_policy()
    obs = make_obs(2, instructions=[INSTRUCTIONS[1], INSTRUCTIONS[2]])
    as_float = dict(obs, instruction=obs["instruction"].float())  # what an SB3 buffer may hand back
    assert policy._instructions(as_float) == [INSTRUCTIONS[1], INSTRUCTIONS[2]]
    as_text = dict(obs, instruction=[INSTRUCTIONS[1], INSTRUCTIONS[2]])
    with torch.no_grad():
        a = policy.model(**policy.prepare_inputs(obs)).action_logits
        b = policy.model(**policy.prepare_inputs(as_float)).action_logits
        c = policy.model(**policy.prepare_inputs(as_text)).action_logits
    assert torch.equal(a, b) and torch.equal(a, c)
    assert INSTRUCTIONS[1] in policy.processor._cache  # tokenised once, then reused


def test_weights_after_construction_equal_the_checkpoint(tmp_path, tiny_model, processor):
    tiny_model.save_pretrained(tmp_path / "ckpt", processor=processor)
    policy = OpenVLAOFTPolicy(observation_space(), chunked_action_space(), lambda _: 1e-3,
                              model_path=str(tmp_path / "ckpt"), lora_rank=4)
    loaded = policy.model.export_state_dict()
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded[key], value), key
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or ".value_head." in n for n in trainable)
    optimized = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in policy.parameters() if p.requires_grad}


def test_construction_errors():
    with pytest.raises(ValueError, match="exactly one of"):
        OpenVLAOFTPolicy(observation_space(), chunked_action_space(), lambda _: 1e-3)
    with pytest.raises(ValueError, match="decodes 8 x 23 = 184"):
        OpenVLAOFTPolicy(observation_space(), chunked_action_space(4), lambda _: 1e-3, preset="tiny")
    small = OpenVLAOFTPolicy(observation_space(), chunked_action_space(4), lambda _: 1e-3, preset="tiny",
                             config_overrides={"num_action_chunks": 4})
    assert small.model.config.num_action_tokens == 4 * ACTION_DIM
    with pytest.raises(ValueError, match="lacks \\['instruction'\\]"):
        space = observation_space()
        del space.spaces["instruction"]
        OpenVLAOFTPolicy(space, chunked_action_space(), lambda _: 1e-3, preset="tiny")


def test_ppo_constructs_and_learns_on_a_chunked_env():
    from stable_baselines3 import PPO

    env = TinyBehaviorEnv(image_size=64)
    torch.manual_seed(0)
    model = PPO(OpenVLAOFTPolicy, env, n_steps=4, batch_size=2, n_epochs=1, learning_rate=1e-3, seed=0,
                device="cpu", policy_kwargs={"preset": "tiny", "lora_rank": 4, "torch_dtype": "float32"})
    frozen = {n: p.detach().clone() for n, p in model.policy.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.policy.named_parameters() if p.requires_grad}
    model.learn(total_timesteps=4)
    assert model.num_timesteps == 4
    for n, p in model.policy.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    changed = [n for n, p in model.policy.named_parameters() if n in trainable and not torch.equal(p, trainable[n])]
    assert any(".lora_" in n for n in changed) and any("value_head" in n for n in changed)
    assert np.isfinite(model.logger.name_to_value["train/value_loss"])
    action, _ = model.predict(env.reset(seed=1)[0], deterministic=True)
    assert env.action_space.contains(action)


def test_ppo_save_and_load_restore_the_policy(tmp_path):
    from stable_baselines3 import PPO

    env = TinyBehaviorEnv(image_size=32)
    model = PPO(OpenVLAOFTPolicy, env, n_steps=2, batch_size=2, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"preset": "tiny", "lora_rank": 2})
    model.learn(total_timesteps=2)
    model.save(tmp_path / "ppo")
    again = PPO.load(tmp_path / "ppo", env=env, device="cpu")
    state = again.policy.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.policy.state_dict().items())
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], again.predict(obs, deterministic=True)[0])


def test_a_one_image_model_reads_the_head_camera_only():
    policy = make_policy(config_overrides={"num_images_in_input": 1})
    obs = make_obs(2)
    with torch.no_grad():
        a = policy.model(**policy.prepare_inputs(obs)).action_logits
        obs["wrist_rgb"] = torch.zeros_like(obs["wrist_rgb"])
        b = policy.model(**policy.prepare_inputs(obs)).action_logits
    assert policy.prepare_inputs(obs)["pixel_values"].shape[1] == 6 and torch.equal(a, b)


def test_ppo_on_behavior_r1pro_env():
    """The real Behavior-R1Pro-v0 (embedded MuJoCo backend) through the chunking and SB3 wrappers."""
    pytest.importorskip("mujoco")
    import gymnasium as gym
    from stable_baselines3 import PPO

    import behavior_gym  # noqa: F401 - registers the id
    from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper

    env = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=48, max_episode_steps=16)
    env = SB3ObservationWrapper(ActionChunkWrapper(env, chunk=CHUNK))
    assert env.action_space.shape == (CHUNK * ACTION_DIM,)
    model = PPO(OpenVLAOFTPolicy, env, n_steps=2, batch_size=2, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"preset": "tiny", "lora_rank": 2, "torch_dtype": "float32"})
    obs, _ = env.reset(seed=0)
    text = model.policy._instructions({"instruction": obs["instruction"][None]})[0]
    assert text == env.unwrapped.task_info.instruction and len(text) > 5
    model.learn(total_timesteps=2)
    assert model.num_timesteps == 2
    env.close()


def test_policy_without_value_head_gives_no_values():
    policy = make_policy(config_overrides={"add_value_head": False})
    obs = make_obs(2)
    with torch.no_grad():
        actions, values, log_prob = policy(obs)
        values2, log_prob2, entropy = policy.evaluate_actions(obs, actions)
    assert values is None and values2 is None
    assert log_prob.shape == (2,) and entropy.shape == (2,)
    torch.testing.assert_close(log_prob2, log_prob, rtol=0, atol=1e-4)
    with pytest.raises(RuntimeError, match="no value head"):
        policy.predict_values(obs)
    numpy_obs = {k: v.numpy() for k, v in make_obs(1).items()}
    assert policy.predict(numpy_obs, deterministic=True)[0].shape == (1, CHUNK * ACTION_DIM)


def test_policy_saves_and_loads_its_lora_adapter(tmp_path):
    base = make_policy()
    base.save_pretrained(str(tmp_path / "base"))
    policy = make_policy(model_path=str(tmp_path / "base"), preset=None, lora_rank=4)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if ".lora_B." in name:
                p.normal_(std=0.05)
    policy.save_lora_adapter(str(tmp_path / "adapter"))
    again = make_policy(model_path=str(tmp_path / "base"), preset=None,
                        lora_adapter_path=str(tmp_path / "adapter"))
    obs = make_obs(2)
    with torch.no_grad():
        a = policy.get_distribution(obs).logits
        b = again.get_distribution(obs).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert again._get_constructor_parameters()["lora_adapter_path"] == str(tmp_path / "adapter")
    with pytest.raises(ValueError, match="lora_rank=8 but the adapter"):
        make_policy(model_path=str(tmp_path / "base"), preset=None, lora_rank=8,
                    lora_adapter_path=str(tmp_path / "adapter"))
