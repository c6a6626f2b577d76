"""PPO and GRPO on the toy env: they learn, and the update's parts (accumulation, lr groups, target_kl,
bf16, chunk-level fallback, GRPO advantages and filtering) do what they say."""

import copy

import numpy as np
import pytest
import torch as th

from algorithms import GRPO, PPO
from algorithms import metrics as M
from algorithms.group_reset import GroupResult
from tests.algorithms.recording import recorded


def ppo(toys, n_envs=4, **kw):
    kw = {"n_steps": 16, "batch_size": 32, "n_epochs": 4, "learning_rate": 1e-2, "gamma": 0.9, "seed": 0, **kw}
    return PPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(n_envs), **kw)


def grpo(toys, n_envs=8, **kw):
    kw = {"n_steps": 6, "batch_size": 24, "n_epochs": 4, "learning_rate": 1e-2, "group_size": 4, "seed": 0, **kw}
    return GRPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(n_envs), **kw)


def test_ppo_improves_return(toys):
    model = ppo(toys, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_range_vf=0.5, value_lr=3e-2)
    rec = recorded(model)
    before = toys.evaluate_return(model)
    model.learn(4 * 16 * 30)
    after = toys.evaluate_return(model)
    print(f"PPO return {before:.2f} -> {after:.2f} (max 3.0)")
    assert after > before + 1.0 and after > 2.5
    assert model._token_level and model.rollout_buffer.log_probs.shape[-1] == 8 * 23
    q = rec.values[M.ENV_Q_SCORE]
    assert np.mean(q[-3:]) > np.mean(q[:3]) + 0.2
    assert all(v == 24 for v in rec.values[M.ENV_EPISODE_LEN])  # true length in env steps, not chunks


def test_grpo_improves_return(toys):
    model = grpo(toys)
    rec = recorded(model)
    before = toys.evaluate_return(model)
    model.learn(8 * 6 * 30)
    after = toys.evaluate_return(model)
    print(f"GRPO return {before:.2f} -> {after:.2f} (max 3.0)")
    assert after > before + 1.0 and after > 2.5
    assert M.ACTOR_VALUE_LOSS not in rec.values  # no critic
    assert np.mean(rec.values[M.ROLLOUT_VALID_FRACTION]) > 0.4


def test_grpo_does_not_train_the_value_head(toys):
    model = grpo(toys)
    recorded(model)
    before = copy.deepcopy(model.policy.value_head.state_dict())
    model.learn(8 * 6 * 2)
    for k, v in model.policy.value_head.state_dict().items():
        assert th.equal(v, before[k])


def test_grpo_advantages_filtering_and_masks(toys):
    model = grpo(toys, n_envs=4, group_size=2, n_steps=2, batch_size=8, filter_groups=True)
    buf = model.rollout_buffer
    buf.reset()
    obs = model.env.reset()
    # step 0: env 0,1 in trajectory 5 (group 0), env 2,3 in trajectory 6 (group 1); step 1: env 1 idle
    for traj, mask in [([5, 5, 6, 6], [1, 1, 1, 1]), ([5, 5, 7, 7], [1, 0, 1, 1])]:
        buf.add(obs, np.zeros((4, buf.action_dim)), np.zeros(4), np.zeros(4), th.zeros(4), th.zeros(4, 184),
                mask=np.array(mask), trajectory_id=np.array(traj))
    completed = {5: GroupResult(np.array([1.0, 0.0]), np.array([True, False]), 0),
                 6: GroupResult(np.array([1.0, 1.0]), np.array([True, True]), 0)}  # all success: filtered
    masks = buf.masks.copy()
    with pytest.warns(UserWarning, match="no success flag"):  # nothing to filter on: keeps every group
        model._assign_advantages(buf, completed)
    assert buf.masks[0, 2] == 1.0
    buf.masks = masks
    model.env.saw_success_info = True
    model._assign_advantages(buf, completed)
    a = 0.5 / np.sqrt(0.5)  # (1 - 0.5) / sample std of [1, 0]
    np.testing.assert_allclose(buf.advantages, [[a, -a, 0, 0], [a, 0, 0, 0]], rtol=1e-5)
    np.testing.assert_array_equal(buf.masks, [[1, 1, 0, 0], [1, 0, 0, 0]])  # idle, filtered, unfinished: out
    np.testing.assert_array_equal(buf.returns, [[1, 0, 0, 0], [1, 0, 0, 0]])
    assert model._group_stats[M.ROLLOUT_FILTERED_GROUPS] == 0.5


def one_update(model, seed=0):
    np.random.seed(seed)
    model.train()
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def test_micro_batches_accumulate_to_the_full_batch_update(toys):
    """Gradient accumulation over micro-batches of 5 gives the update of one 32-sample batch."""
    a = ppo(toys, n_epochs=1, micro_batch_size=None, max_grad_norm=0.5)
    b = ppo(toys, n_epochs=1, micro_batch_size=5, max_grad_norm=0.5)
    for m in (a, b):
        recorded(m)
        m.learn(64)  # one rollout and one update each, identical (same seeds)
    b.policy.load_state_dict(a.policy.state_dict())
    b.policy.optimizer.load_state_dict(copy.deepcopy(a.policy.optimizer.state_dict()))
    # a half-masked buffer, as GRPO makes, must accumulate the same way too
    a.rollout_buffer.masks[::2] = 0.0
    b.rollout_buffer = copy.deepcopy(a.rollout_buffer)
    start = copy.deepcopy(a.policy.state_dict())
    pa, pb = one_update(a), one_update(b)
    for k in pa:
        th.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6)
    assert not th.equal(pa["action_head.weight"], start["action_head.weight"])  # the update did something


def test_value_lr_groups_and_trainable_only(toys):
    model = ppo(toys, learning_rate=1e-3, value_lr=5e-2,
                policy_kwargs={"optimizer_kwargs": {"eps": 1e-6}})
    groups = {g["name"]: g for g in model.policy.optimizer.param_groups}
    assert set(groups) == {"policy", "value_head"}
    value_ids = {id(p) for p in model.policy.value_head.parameters()}
    assert {id(p) for p in groups["value_head"]["params"]} == value_ids
    assert groups["policy"]["eps"] == 1e-6
    rec = recorded(model)
    model.learn(64)
    assert groups["value_head"]["lr"] == 5e-2 and groups["policy"]["lr"] == 1e-3
    assert rec.values[M.ACTOR_VALUE_LR][-1] == 5e-2

    # frozen parameters (as with LoRA) stay out of the optimizer
    model.policy.body.requires_grad_(False)
    opt = model._build_optimizer()
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not params & {id(p) for p in model.policy.body.parameters()}


def _record_group_lrs(model) -> list[dict[str, float]]:
    """A list that gets, at every optimizer step from now on, each param group's lr by group name."""
    seen = []
    opt = model.policy.optimizer
    step = opt.step

    def spy(*args, **kwargs):
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        return step(*args, **kwargs)

    opt.step = spy
    return seen


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_lr_warmup_raises_the_policy_lr_linearly(toys, algo):
    """`lr_warmup_steps=W`: optimizer step k (from 1) runs the policy group at lr * min(1, k / W); the
    value head's lr is not warmed up; afterwards the schedule's lr as without warmup."""
    make = ppo if algo == "ppo" else grpo
    model = make(toys, learning_rate=1e-2, lr_warmup_steps=6, **({"value_lr": 5e-2} if algo == "ppo" else {}))
    seen = _record_group_lrs(model)
    model.learn(64 if algo == "ppo" else 48)
    policy_lrs = [s["policy"] for s in seen]
    assert len(policy_lrs) > 6
    np.testing.assert_allclose(policy_lrs[:6], [1e-2 * k / 6 for k in range(1, 7)])
    np.testing.assert_allclose(policy_lrs[6:], 1e-2)
    if algo == "ppo":
        assert all(s["value_head"] == 5e-2 for s in seen)
    with pytest.raises(ValueError, match="lr_warmup_steps"):
        make(toys, lr_warmup_steps=-1)


def test_critic_warmup_trains_the_value_head_alone_first(toys):
    """`critic_warmup_updates=N`: the first N updates leave the policy's parameters as they were (no
    step, no weight decay) while the value head learns; then both train, and an lr warmup counts the
    policy's own steps. GRPO, without a critic, refuses it."""
    model = ppo(toys, learning_rate=1e-2, value_lr=5e-2, critic_warmup_updates=2, lr_warmup_steps=4,
                policy_kwargs={"optimizer_class": th.optim.AdamW, "optimizer_kwargs": {"weight_decay": 0.1}})
    body = [p.detach().clone() for p in model.policy.body.parameters()]
    value = [p.detach().clone() for p in model.policy.value_head.parameters()]
    model.learn(2 * 16 * 4)  # two updates of n_steps x n_envs
    assert model._train_calls == 2 and model._actor_steps == 0 and model._n_updates > 0
    assert all(th.equal(a, b) for a, b in zip(body, model.policy.body.parameters()))
    assert any(not th.equal(a, b) for a, b in zip(value, model.policy.value_head.parameters()))
    seen = _record_group_lrs(model)
    model.learn(16 * 4, reset_num_timesteps=False)
    assert any(not th.equal(a, b) for a, b in zip(body, model.policy.body.parameters()))
    np.testing.assert_allclose([s["policy"] for s in seen[:4]], [1e-2 * k / 4 for k in range(1, 5)])
    with pytest.raises(ValueError, match="no critic"):
        grpo(toys, critic_warmup_updates=1)


def test_target_kl_stops_early(toys):
    model = ppo(toys, learning_rate=0.3, target_kl=1e-4, n_epochs=10)
    rec = recorded(model)
    model.learn(64)
    assert rec.values[M.ACTOR_EARLY_STOP][-1] == 1.0
    assert model._n_updates < 10 * 2


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_desired_kl_adapts_the_policy_lr_to_the_update_s_kl(toys, algo, tmp_path):
    """`desired_kl`: before each step the policy group's lr is divided by 1.5 when the minibatch's KL is
    above twice the target and multiplied by 1.5 (up to the given lr) when below half; the value head's
    lr stays; the factor carries over to the next update and through a checkpoint. The same updates
    without it move the policy further (a higher mean KL per update)."""
    make = ppo if algo == "ppo" else grpo
    extra = {"value_lr": 5e-2} if algo == "ppo" else {}
    kls = {}
    for target in (None, 1e-4):
        model = make(toys, learning_rate=0.3, n_epochs=10, desired_kl=target, min_lr_factor=1e-9, **extra)
        rec = recorded(model)
        seen = _record_group_lrs(model)
        model.learn(64 if algo == "ppo" else 48)
        kls[target] = rec.values[M.ACTOR_APPROX_KL][-1]
    policy_lrs = np.array([s["policy"] for s in seen])
    ratios = policy_lrs[1:] / policy_lrs[:-1]
    assert np.all(policy_lrs <= 0.3 + 1e-12) and policy_lrs.min() < 0.3 / 1.5 ** 3
    assert np.all(np.isclose(ratios, 1 / 1.5) | np.isclose(ratios, 1.0) | np.isclose(ratios, 1.5))
    if algo == "ppo":
        assert all(s["value_head"] == 5e-2 for s in seen)
    assert kls[1e-4] < kls[None]
    factor = model._kl_lr_factor
    assert 0 < factor < 1 and rec.values[M.ACTOR_LR][-1] < 0.3
    model.save(tmp_path / "m.zip")
    loaded = type(model).load(tmp_path / "m.zip", env=model.env)
    assert loaded._kl_lr_factor == factor and loaded.desired_kl == 1e-4
    # a target the updates never reach half of: the lr stays the given one
    model = make(toys, learning_rate=1e-4, desired_kl=10.0, **extra)
    seen = _record_group_lrs(model)
    model.learn(64 if algo == "ppo" else 48)
    np.testing.assert_allclose([s["policy"] for s in seen], 1e-4)
    with pytest.raises(ValueError, match="desired_kl"):
        make(toys, desired_kl=0.0)
    with pytest.raises(ValueError, match="min_lr_factor"):
        make(toys, desired_kl=0.01, min_lr_factor=0.0)


def test_desired_kl_never_sets_the_lr_below_its_floor(toys):
    model = ppo(toys, learning_rate=0.3, n_epochs=10, desired_kl=1e-9, min_lr_factor=0.1)
    seen = _record_group_lrs(model)
    model.learn(128)
    policy_lrs = [s["policy"] for s in seen]
    assert min(policy_lrs) == pytest.approx(0.03) and policy_lrs[-1] == pytest.approx(0.03)


def test_bf16_autocast_on_cpu(toys):
    model = ppo(toys, bf16=True)
    rec = recorded(model)
    assert model.use_bf16
    model.learn(128)
    assert np.isfinite(rec.values[M.ACTOR_LOSS]).all()


def _bf16_policy(toys, frozen_body=False):
    class Bf16TokenPolicy(toys.TinyTokenPolicy):  # built in bfloat16, as the runner's policies were
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.to(th.bfloat16)
            self.body.requires_grad_(not frozen_body)  # frozen: as LoRA's base weights

    return Bf16TokenPolicy


def _changed_fraction(before: dict, model) -> dict[str, float]:
    after = model.policy.state_dict()
    return {k: (after[k].float() != before[k].float()).float().mean().item() for k in before
            if k.startswith(("body", "value_head"))}


@pytest.mark.parametrize("master_weights", [True, False])
def test_master_weights_let_small_steps_move_a_bf16_policy(toys, master_weights):
    """At RL's lr 2e-5 an AdamW step is below half a bf16 ulp of most weights: trained in bfloat16 the
    body's weights never move (runs 1-14 trained so); with float32 master weights over 90 % of each layer's do."""
    model = PPO(_bf16_policy(toys), toys.make_toy_vec_env(4), n_steps=16, batch_size=32, n_epochs=1,
                learning_rate=2e-5, bf16=True, master_weights=master_weights, seed=0)
    trained = [p for p in model.policy.parameters() if p.requires_grad]
    assert {p.dtype for p in trained} == {th.float32 if master_weights else th.bfloat16}
    opt_params = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in trained}  # the optimizer steps the cast parameters themselves
    recorded(model)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(4 * 16)
    changed = _changed_fraction(before, model)
    if master_weights:
        assert min(changed.values()) > 0.9, changed
    else:
        assert changed["body.0.weight"] < 0.1, changed


def test_master_weights_keep_frozen_parameters_and_cast_all_without_autocast(toys):
    frozen = PPO(_bf16_policy(toys, frozen_body=True), toys.make_toy_vec_env(4), n_steps=16, batch_size=32,
                 bf16=True, seed=0)
    assert frozen.policy.body[0].weight.dtype == th.bfloat16  # frozen: left in bf16
    assert frozen.policy.action_head.weight.dtype == th.float32
    rec = recorded(frozen)
    frozen.learn(64)  # bf16 autocast on the CPU mixes the two
    assert np.isfinite(rec.values[M.ACTOR_LOSS]).all()

    plain = PPO(_bf16_policy(toys), toys.make_toy_vec_env(4), n_steps=16, batch_size=32, bf16=False, seed=0)
    assert {t.dtype for t in [*plain.policy.parameters(), *plain.policy.buffers()]} == {th.float32}
    rec = recorded(plain)
    plain.learn(64)
    assert np.isfinite(rec.values[M.ACTOR_LOSS]).all()


def test_a_saved_run_resumes_with_its_float32_master_weights(toys, tmp_path):
    model = PPO(_bf16_policy(toys), toys.make_toy_vec_env(4), n_steps=16, batch_size=32, learning_rate=2e-5,
                bf16=True, seed=0)
    recorded(model)
    model.learn(64)
    model.save(tmp_path / "run.zip")
    loaded = PPO.load(tmp_path / "run.zip", env=toys.make_toy_vec_env(4))
    for (k, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True):
        assert b.dtype == a.dtype and th.equal(a, b), k  # float32, unrounded

    # a run saved while it trained in bf16 (runs 1-14) resumes with master weights: its weights and Adam
    # moments are cast as they load (custom_objects stands in for the attribute those checkpoints lack)
    old = PPO(_bf16_policy(toys), toys.make_toy_vec_env(4), n_steps=16, batch_size=32, bf16=True,
              master_weights=False, seed=0)
    recorded(old)
    old.learn(64)
    old.save(tmp_path / "old.zip")
    resumed = PPO.load(tmp_path / "old.zip", env=toys.make_toy_vec_env(4), custom_objects={"master_weights": True})
    for (k, a), b in zip(old.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True):
        assert th.equal(a.float(), b.float()), k
    assert {p.dtype for p in resumed.policy.parameters()} == {th.float32}
    moments = [v for st in resumed.policy.optimizer.state.values() for key, v in st.items() if key != "step"]
    assert moments and {m.dtype for m in moments} == {th.float32}
    recorded(resumed)
    resumed.learn(64, reset_num_timesteps=False)


@pytest.mark.parametrize("level", ["action", "chunk"])
def test_ratio_levels(toys, level):
    model = ppo(toys, ratio_level=level)
    rec = recorded(model)
    model.learn(64)
    assert np.isfinite(rec.values[M.ACTOR_APPROX_KL]).all()
    assert model.rollout_buffer.log_probs.shape[-1] == (1 if level == "chunk" else 8 * 23)


def test_sb3_multi_input_policy_falls_back_to_chunk_level(toys):
    """SB3's own MultiInputPolicy (Gaussian, no per-token log-probs) trains at chunk level."""
    venv = toys.make_toy_vec_env(2, image_size=36)  # NatureCNN needs >= 36 pixels
    with pytest.warns(UserWarning, match="chunk-level"):
        model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=8, n_epochs=1, seed=0,
                    policy_kwargs={"net_arch": [32]})
    rec = recorded(model)
    model.learn(32)
    assert not model._token_level and model.rollout_buffer.log_probs.shape[-1] == 1
    assert np.isfinite(rec.values[M.ACTOR_LOSS]).all()


def test_grpo_trajectories_spanning_rollouts(toys):
    """Episodes of 3 chunks, rollouts of 2: the first rollout has no finished group (all masked, with a
    warning); in the second, the finishing step gets the advantage of the whole trajectory's return."""
    model = grpo(toys, n_envs=4, group_size=2, n_steps=2, batch_size=8, n_epochs=1)
    rec = recorded(model)
    with pytest.warns(UserWarning, match="no group finished"):
        model.learn(8)
    assert rec.values[M.ROLLOUT_VALID_FRACTION] == [0.0] and model._n_updates == 0
    model.learn(8, reset_num_timesteps=False)
    buf = model.rollout_buffer
    np.testing.assert_array_equal(buf.masks, [[1, 1, 1, 1], [0, 0, 0, 0]])  # step 3 of 3, then a new episode
    episode_returns = [info["r"] for info in list(model.ep_info_buffer)[-4:]]  # Monitor's returns, env order
    np.testing.assert_allclose(buf.returns[0], episode_returns, rtol=1e-6)
    r = np.array(episode_returns).reshape(2, 2)
    expected = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(buf.advantages[0], expected.reshape(-1), rtol=1e-4, atol=1e-5)
    assert model._n_updates == 1


def test_grpo_accepts_a_policy_without_value_head(toys):
    class NoValue(toys.TinyTokenPolicy):
        def forward(self, obs, deterministic=False, per_token=False):
            actions, _, log_prob = super().forward(obs, deterministic, per_token)
            return actions, None, log_prob

        def evaluate_actions(self, obs, actions, per_token=False):
            _, log_prob, entropy = super().evaluate_actions(obs, actions, per_token)
            return None, log_prob, entropy

    model = GRPO(NoValue, toys.make_toy_vec_env(4), group_size=2, n_steps=3, batch_size=12, seed=0)
    recorded(model)
    model.learn(12)
    assert model._n_updates > 0
    with pytest.raises(ValueError, match="PPO needs a value head"):
        quiet = PPO(NoValue, toys.make_toy_vec_env(2), n_steps=3, batch_size=6, seed=0)
        recorded(quiet)
        quiet.learn(6)


def _first_ratios(monkeypatch):
    """Patch the clipped loss to keep the log-ratios (new - old, valid samples) of its first call."""
    import algorithms.ppo as ppo_module

    seen = []
    real = ppo_module.clipped_policy_loss

    def spy(new_lp, old_lp, advantages, *args):
        if not seen:
            mask = args[2] > 0
            seen.append((new_lp - old_lp).detach()[mask])
        return real(new_lp, old_lp, advantages, *args)

    monkeypatch.setattr(ppo_module, "clipped_policy_loss", spy)
    return seen


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
@pytest.mark.parametrize("recompute", [True, False])
def test_recomputed_log_probs_make_the_first_ratios_one(toys, monkeypatch, algo, recompute):
    """Rollout log-probs off by a known amount (as from another forward pass): with recompute_log_probs
    the update replaces them by its own, the first ratios are 1 and the gap metric reports the offset."""
    make, steps = (ppo, 16) if algo == "ppo" else (grpo, 6)
    model = make(toys, n_epochs=1, micro_batch_size=5, recompute_log_probs=recompute)
    rec = recorded(model)
    _, callback = model._setup_learn(steps * model.n_envs)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, steps)
    buf = model.rollout_buffer
    assert buf.log_probs.shape[-1] == 8 * 23 and 0 < buf.masks.mean() <= 1
    acted = buf.log_probs.copy()
    offset = np.random.default_rng(0).uniform(-0.2, 0.2, size=acted.shape).astype(np.float32)
    buf.log_probs += offset
    seen = _first_ratios(monkeypatch)
    model.train()
    log_ratio = seen[0]
    assert log_ratio.numel() > 0
    valid = buf.masks > 0
    if recompute:
        assert log_ratio.abs().max() < 1e-5  # ratios exactly 1 up to float rounding
        gap = rec.values[M.ROLLOUT_LOG_PROB_GAP][-1]
        assert gap == pytest.approx(np.abs(offset[valid]).mean(), rel=1e-3)
        # the stored log-probs are the policy's own again (the rollout's, the same forward pass here)
        np.testing.assert_allclose(buf.log_probs[valid], acted[valid], atol=1e-5)
        assert rec.values[M.TIME_RECOMPUTE_LOG_PROBS][-1] > 0
    else:
        assert log_ratio.abs().max() > 0.1  # the offset shows in the ratios
        assert M.ROLLOUT_LOG_PROB_GAP not in rec.values


def test_recomputed_log_probs_with_top_k_count_the_tokens_the_update_cannot_draw(toys):
    """With top-k sampling the update's forward can rank near-tied bins differently from the rollout's:
    the tokens it cannot draw (log-prob about -1e30) are counted in their own metric, keep the rollout's
    log-prob (ratio 0: no gradient, as tokens an update pushes out), and the gap is taken over the tokens
    both passes can draw (it was about 1e28 before)."""
    from algorithms.objectives import UNDRAWABLE_LOG_PROB

    class TopK(toys.TinyTokenPolicy):
        top_k = 3

        def _dist(self, obs):
            dist, values = super()._dist(obs)
            logits = dist.logits
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
            return th.distributions.Categorical(logits=logits.masked_fill(logits < kth, -1e30)), values

    model = PPO(TopK, toys.make_toy_vec_env(4), n_steps=16, batch_size=32, n_epochs=1, seed=0,
                recompute_log_probs=True)
    with th.no_grad():  # bins that differ by little, as the VLA's smoothed ones
        model.policy.action_head.bias.copy_(th.randn(model.policy.action_head.bias.shape) * 0.05)
    rec = recorded(model)
    _, callback = model._setup_learn(16 * 4)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, 16)
    buf = model.rollout_buffer
    assert (buf.log_probs > UNDRAWABLE_LOG_PROB).all()  # the rollout drew only tokens it could draw
    with th.no_grad():  # another forward pass: logits a little off
        model.policy.action_head.bias.add_(th.randn(model.policy.action_head.bias.shape) * 0.05)
    model.train()
    lost = rec.values[M.ROLLOUT_RECOMPUTE_UNDRAWABLE][-1]
    assert 0.05 < lost < 0.9
    # they keep the rollout's log-prob (a ratio of 0, no gradient), counted as undrawable by the update
    assert (buf.log_probs > UNDRAWABLE_LOG_PROB).all()
    assert rec.values[M.ACTOR_UNDRAWABLE_FRACTION][-1] >= lost * 0.9
    assert 0 < rec.values[M.ROLLOUT_LOG_PROB_GAP][-1] < 1.0
    assert np.isfinite(rec.values[M.ACTOR_LOSS][-1]) and np.isfinite(rec.values[M.ACTOR_APPROX_KL][-1])
