"""Control PPO: the actor-critic's evaluate(), learning on CartPole, Pendulum, saving, config errors."""

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, MultivariateNormal

from rlhfkit.control import ActorCritic, ControlConfig, evaluate_policy, train_control


def test_categorical_evaluate_matches_torch_distributions():
    torch.manual_seed(0)
    agent = ActorCritic(4, 3, discrete=True)
    obs, acts = torch.randn(7, 4), torch.randint(0, 3, (7,))
    values, logp, ent = agent.evaluate(obs, acts)
    dist = Categorical(logits=agent.actor(obs))
    torch.testing.assert_close(logp, dist.log_prob(acts), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ent, dist.entropy(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values, agent.critic(obs).squeeze(), rtol=0, atol=0)


@pytest.mark.parametrize("fixed_std", [None, 0.5])
def test_gaussian_evaluate_is_the_multivariate_normal_of_the_tutorial(fixed_std):
    # the snippet: dist = MultivariateNormal(mean, self.cov_mat); log_probs = dist.log_prob(batch_acts)
    torch.manual_seed(1)
    agent = ActorCritic(3, 2, discrete=False, fixed_std=fixed_std, log_std_init=-0.3)
    if fixed_std is None:
        with torch.no_grad():
            agent.log_std.copy_(torch.tensor([-0.3, 0.2]))
    obs, acts = torch.randn(6, 3), torch.randn(6, 2)
    _, logp, ent = agent.evaluate(obs, acts)
    cov_mat = torch.diag(torch.exp(agent.log_std) ** 2)
    dist = MultivariateNormal(agent.actor(obs), cov_mat)
    torch.testing.assert_close(logp, dist.log_prob(acts), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent, dist.entropy(), rtol=1e-5, atol=1e-5)
    assert (fixed_std is None) == any(p is agent.log_std for p in agent.parameters())


def test_log_prob_gradient_reaches_the_learned_log_std():
    agent = ActorCritic(3, 2, discrete=False)
    _, logp, _ = agent.evaluate(torch.randn(5, 3), torch.randn(5, 2))
    logp.sum().backward()
    assert agent.log_std.grad is not None and torch.all(agent.log_std.grad != 0)


def test_cartpole_learning_starts_within_a_small_budget(tmp_path):
    cfg = ControlConfig(total_timesteps=16384, seed=1, output_dir=str(tmp_path), progress=False)
    episodes = train_control(cfg)
    returns = [e["episodic_return"] for e in episodes]
    # a random CartPole policy averages about 20; learning must be visible in 16k steps
    assert np.mean(returns[:10]) < 30 and np.mean(returns[-10:]) > 2 * np.mean(returns[:10])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ep_rows = [r for r in rows if "episodic_return" in r]
    assert len(ep_rows) == len(episodes) and all(set(r) == {"global_step", "episodic_return", "episodic_length"}
                                                 for r in ep_rows)
    assert ep_rows == sorted(ep_rows, key=lambda r: r["global_step"])
    updates = [r for r in rows if "loss/policy" in r]
    assert len(updates) == 16384 // cfg.batch_size and all(math.isfinite(r["loss/value"]) for r in updates)
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    policy = ActorCritic.from_pretrained(tmp_path / "policy")
    assert np.mean(evaluate_policy(policy, "CartPole-v1", episodes=3)) > np.mean(returns[:10])


@pytest.mark.parametrize("fixed_std", [None, 0.6])
def test_pendulum_runs_saves_and_reloads_with_its_normaliser(tmp_path, fixed_std):
    cfg = ControlConfig(env_id="Pendulum-v1", total_timesteps=1024, num_envs=2, num_steps=256, seed=3,
                        fixed_std=fixed_std, output_dir=str(tmp_path), progress=False, tensorboard=False)
    train_control(cfg)
    policy = ActorCritic.from_pretrained(tmp_path / "policy")
    assert policy.obs_norm is not None and float(policy.obs_norm.count) > 1000  # continuous: on by default
    if fixed_std is None:
        assert not torch.allclose(policy.log_std, torch.zeros(1))  # the learned log-std moved
    else:
        torch.testing.assert_close(policy.log_std, torch.full((1,), math.log(0.6)))
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    acts = policy.act(obs)
    assert acts.shape == (5, 1) and np.all(np.abs(acts) <= 2.0)  # clipped to Pendulum's box
    again = ActorCritic.from_pretrained(tmp_path / "policy")
    np.testing.assert_array_equal(again.act(obs), acts)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_envs=0), "num_envs"), (dict(learning_rate=-1.0), "learning_rate"), (dict(gamma=1.5), "gamma"),
    (dict(num_minibatches=3), "divisible"), (dict(activation="gelu"), "activation"), (dict(fixed_std=0.0), "fixed_std"),
    (dict(total_timesteps=True), "total_timesteps"), (dict(learning_rate="fast"), "learning_rate"),
    (dict(hidden_sizes=[64, 0]), "hidden_sizes"), (dict(env_id=" "), "env_id"),
])
def test_bad_config_is_refused_with_the_field_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ControlConfig(**kwargs)


def test_unknown_environment_is_named(tmp_path):
    with pytest.raises(ValueError, match="CartPoleX-v9"):
        train_control(ControlConfig(env_id="CartPoleX-v9", output_dir=str(tmp_path), progress=False))


def test_discrete_sampling_follows_the_policy_probabilities():
    agent = ActorCritic(2, 3, discrete=True)
    with torch.no_grad():
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(torch.log(torch.tensor([0.2, 0.5, 0.3])))
    gen = torch.Generator().manual_seed(0)
    acts, logp, _ = agent.sample(torch.zeros(20000, 2), gen)
    freq = torch.bincount(acts, minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3]), rtol=0, atol=0.015)
    torch.testing.assert_close(logp.exp(), torch.tensor([0.2, 0.5, 0.3])[acts], rtol=1e-5, atol=1e-6)


def test_docs_explain_every_field():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "control.md").read_text()
    for name, help_text in ControlConfig.field_help().items():
        assert f"| `{name}` |" in text and help_text in text, f"docs/control.md: field {name} missing or stale"


def test_cli_runs_the_example_config_with_overrides(tmp_path):
    from rlhfkit.cli import main

    out = tmp_path / "cp"
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    assert main(["control", "--config", str(root / "examples" / "control_cartpole.yaml"), "total_timesteps=1024",
                 f"output_dir={out}", "--no-progress", "--no-tensorboard"]) == 0
    assert (out / "policy" / "policy.safetensors").is_file() and (out / "config.yaml").is_file()
    assert "total_timesteps: 1024" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("argv, says", [
    (["--env_id", "NoSuchEnv-v0"], "--env_id: 'NoSuchEnv-v0'"),
    (["--num_envs", "ten"], "--num_envs: expected an integer"),
    (["--gamma", "2"], "--gamma: must be in [0, 1]"),
    (["--num_stepz", "3"], "did you mean --num_steps"),
])
def test_cli_bad_input_exits_2_before_writing_anything(tmp_path, capsys, argv, says):
    from rlhfkit.cli import main

    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main(["control", *argv, "--output_dir", str(out), "--total_timesteps", "64"])
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("discrete, activation", [(True, "tanh"), (False, "relu")])
def test_fused_rollout_forward_equals_the_two_networks(discrete, activation):
    torch.manual_seed(2)
    agent = ActorCritic(5, 3, discrete=discrete, activation=activation, hidden_sizes=(16, 8))
    for p in agent.parameters():  # leave the special init so the check sees every block
        torch.nn.init.normal_(p, std=0.5)
    obs = torch.randn(9, 5)
    head, values = agent.fused_forward()(obs)
    torch.testing.assert_close(head, agent.actor(obs), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values, agent.value(obs), rtol=1e-5, atol=1e-6)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "policy.safetensors"))


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k != "sps"} for line in path.read_text().splitlines()]


@pytest.mark.parametrize("env_id, num_steps", [("Pendulum-v1", 96), ("CartPole-v1", 64)])
def test_a_resumed_run_ends_bit_for_bit_where_the_uninterrupted_one_does(tmp_path, env_id, num_steps):
    # 4 iterations with a checkpoint after the 2nd; Pendulum's 200-step episodes are mid-way at every
    # checkpoint, its reward scaler and observation normaliser are on: all of it must come back
    kw = dict(env_id=env_id, num_envs=2, num_steps=num_steps, total_timesteps=8 * num_steps, seed=5,
              save_steps=4 * num_steps, progress=False, tensorboard=False)
    full = tmp_path / "full"
    train_control(ControlConfig(output_dir=str(full), **kw))
    assert sorted(p.name for p in full.glob("checkpoint-*")) == [f"checkpoint-{4 * num_steps}",
                                                               f"checkpoint-{8 * num_steps}"]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "metrics.jsonl").write_text((full / "metrics.jsonl").read_text())  # the killed run had logged it all
    import shutil

    shutil.copytree(full / f"checkpoint-{4 * num_steps}", resumed / f"checkpoint-{4 * num_steps}")
    train_control(ControlConfig(output_dir=str(resumed), resume_from_checkpoint="latest", **kw))
    a, b = _weights(full / "policy"), _weights(resumed / "policy")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(resumed / "metrics.jsonl") == _rows(full / "metrics.jsonl")  # each row once, the same values
    mid = _weights(full / f"checkpoint-{4 * num_steps}")
    assert any(not torch.equal(mid[k], a[k]) for k in a)  # the second half did train


def test_resume_refuses_another_environment(tmp_path):
    kw = dict(num_envs=2, num_steps=32, total_timesteps=128, seed=0, save_steps=64, progress=False,
              tensorboard=False, output_dir=str(tmp_path))
    train_control(ControlConfig(**kw))
    with pytest.raises(ValueError, match="env_id"):
        train_control(ControlConfig(**{**kw, "env_id": "Acrobot-v1"}, resume_from_checkpoint="latest"))
