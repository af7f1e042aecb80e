"""The modern entry point: ``train_ppo(trainer, reward_fn, prompts)`` runs the whole loop.

It is the classic loop written once (sample prompts -> ``generate`` -> ``reward_fn`` ->
``step`` -> ``log_stats``) with a progress bar, a console line per step (and, with
``log_completions``, a table of samples), JSONL/TensorBoard metrics, periodic atomic
checkpoints, exact ``resume_from_checkpoint`` (same layout and resume path as the training
loop's, see ``checkpoint``) and ``learning_curve.png`` at the end.

What the loop carries between calls on one trainer is declared once, as ``TrainState``
(``PPOTrainer.train_state``): the seeded prompt sampler, whose state is part of the checkpoint
so the prompts after a resume are the ones an uninterrupted run draws, the number of prompts
the run trains on, and whether an update is under way (for Ctrl-C). The ptx stream counts the
batches it has served itself (``PTXStream.consumed``), and a resume fast-forwards it.
"""

from __future__ import annotations

import inspect
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file

from .. import plot
from ..rollout.agents import Agent, environment_token_rewards, episode_metrics, sample_episodes
from ..rollout.rewards import RewardFunc, score
from ..rollout.sampling import Completions
from . import checkpoint, completion_log
from .config import ConfigError
from .trackers import console_line, write_console

RewardFn = Callable[[list[str], list[str]], Sequence[float]]
DEFAULT_GENERATION = dict(do_sample=True, top_k=0, top_p=1.0, max_new_tokens=32)
STATE_FILE = checkpoint.STATE_FILE


@dataclass
class TrainState:
    """What ``train_ppo`` keeps on a ``PPOTrainer`` (``trainer.train_state``) besides the weights.

    ``prompt_rng`` draws each step's prompt indices; seeded from ``config.seed``, its state is
    checkpointed. ``prompt_count`` is the number of prompts the run trains on (None until the first
    ``train``); a resume must pass as many. ``in_update`` is True from ``step`` to ``log_stats``:
    a Ctrl-C that cuts an update saves no checkpoint.
    """

    prompt_rng: random.Random
    prompt_count: int | None = None
    in_update: bool = False


def train_ppo(trainer, reward_fn: RewardFn, prompts: Sequence[str], *, steps: int | None = None,
              generation_kwargs: dict | None = None, output_dir: str | None = None, save_steps: int | None = None,
              resume_from_checkpoint: str | None = None, save_total_limit: int | None = None,
              progress: bool = True, columns: dict[str, Sequence] | None = None,
              max_prompt_length: int | None = None, add_special_tokens: bool = True,
              eval_fn: Callable[[object], dict] | None = None, eval_steps: int = 0,
              log_completions: bool = False, num_completions_to_print: int | None = None,
              tools=None, environment_factory=None, tool_parser: Callable | None = None) -> list[dict]:
    """Run until ``trainer.current_step == steps`` (default ``config.steps``); returns this call's log rows.

    ``reward_fn(prompts, responses) -> scores`` gets decoded text, one score per response:
    a reward model's scorer, a rule, or a human queue. With ``columns`` (one list per
    column, aligned with ``prompts``) it is called ``reward_fn(prompts, responses,
    **batch_columns)``, as TRL 1.x calls reward functions. ``max_prompt_length`` keeps the
    last that many prompt tokens. Checkpoints go to ``output_dir/checkpoint-<step>`` every
    ``save_steps`` steps and at the end (keeping the newest ``save_total_limit``); Ctrl-C
    writes one before stopping. ``resume_from_checkpoint``: a checkpoint folder or
    ``'latest'`` (the newest in ``output_dir``). ``eval_fn(trainer) -> metrics`` runs every
    ``eval_steps`` steps and at the end; its metrics are logged and join the history.
    Every step prints one line of key metrics on stderr (``progress=False`` drops the bar, not
    the lines); ``log_completions`` adds a table of ``num_completions_to_print`` (None: all)
    prompts, responses and rewards there and in ``output_dir/completions.jsonl``. At the end
    ``output_dir/learning_curve.png`` is drawn from ``metrics.jsonl``.

    Multi-turn episodes (docs/agents.md#ppo): ``tools`` (functions), ``environment_factory`` (a
    class, or a dict of them by name; default: ``config.tools`` / ``config.environment_factory``,
    dotted paths) and ``tool_parser`` (``text -> list[ToolCall]``) make every response an episode
    sampled by ``rollout.agents`` (caps: ``config.max_tool_calling_iterations``,
    ``config.tool_timeout``, and ``max_new_tokens`` for the model's and inserted tokens together).
    Prompts may then be text or messages. ``reward_fn(prompts, completions, **columns)`` gets the
    completion as the episode's messages (message prompts) or its text after the prompt, plus
    ``environments`` and ``episodes`` when its signature names them (or has ``**kwargs``); it may
    be None when the environment gives a reward. ``step`` gets the policy masks and the
    environment's rewards as ``token_rewards``.
    """
    cfg = trainer.config
    if not prompts:
        raise ValueError("train_ppo needs a non-empty list of prompts")
    steps = steps if steps is not None else cfg.steps
    output_dir = Path(output_dir or cfg.output_dir)
    save_steps = save_steps if save_steps is not None else cfg.save_steps
    generation_kwargs = {**DEFAULT_GENERATION, "pad_token_id": trainer.pad_token_id, **(generation_kwargs or {})}
    agent = build_agent(trainer, tools, environment_factory, tool_parser, generation_kwargs, max_prompt_length)
    if agent is not None:
        agent.check_columns(columns or {}, len(prompts), "the training prompts")
        if reward_fn is None and not agent.rewarded:
            raise ConfigError("PPOConfig", "environment_factory", "train(reward_fn=None) needs an environment that "
                                                                  "gives a reward (get_reward() or step()); pass a "
                                                                  "reward_fn")
        completions = Completions(trainer.tokenizer, generation_kwargs, trainer.rollout_engine)
    engine = trainer.mechanics
    engine.start(output_dir, resume_from_checkpoint, lambda path: load_checkpoint(trainer, path),
                 lambda: trainer.current_step, logs=(output_dir / completion_log.FILE,))
    main = trainer.accelerator.is_main_process
    _check_prompts(trainer, prompts)
    state = trainer.train_state
    history: list[dict] = []
    bar = engine.progress(steps, min(trainer.current_step, steps), "ppo", disable=not progress)
    saved = None

    def save(point=None):
        nonlocal saved
        save_checkpoint(trainer, output_dir / f"checkpoint-{trainer.current_step}", save_total_limit, point)
        saved = trainer.current_step

    encode = _encoder(trainer.tokenizer, max_prompt_length, add_special_tokens)
    evaluated = None

    def evaluate():
        nonlocal evaluated
        with checkpoint.rng_preserved():  # training (and any later checkpoint) is the same with or without it
            metrics = eval_fn(trainer)
        engine.record(metrics, trainer.current_step, history)
        evaluated = trainer.current_step

    boundary = _boundary(trainer)
    try:
        while trainer.current_step < steps:
            idx = [state.prompt_rng.randrange(len(prompts)) for _ in range(cfg.batch_size)]
            batch_columns = {k: [v[i] for i in idx] for k, v in (columns or {}).items()}
            if agent is not None:
                row, samples = _episode_iteration(trainer, agent, completions, reward_fn, [prompts[i] for i in idx],
                                                  batch_columns if columns else None)
            else:
                row, samples = _ppo_iteration(trainer, reward_fn, [prompts[i] for i in idx], generation_kwargs,
                                              encode, batch_columns if columns else None)
            history.append(row)
            boundary = _boundary(trainer)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}")
            if main:
                write_console(console_line({k: v for k, v in row.items() if k != "step"}, row["step"]))
            if log_completions:  # every process: the rows are gathered
                completion_log.write(output_dir, row["step"], samples, num_completions_to_print, trainer.accelerator)
            if eval_fn is not None and eval_steps and trainer.current_step % eval_steps == 0:
                evaluate()
            if save_steps and trainer.current_step % save_steps == 0:
                save()
    except KeyboardInterrupt:
        # Before an update (generating, scoring) the weights are still the boundary's; right after
        # one, now is a boundary. An update is cut only by a second Ctrl-C: then nothing is saved.
        if state.in_update:
            print("stopped inside a PPO update: no checkpoint of this step; resume from the last one", file=sys.stderr)
        elif saved != trainer.current_step:
            save(boundary if boundary["current_step"] == trainer.current_step else None)
        raise
    finally:
        bar.close()
    if eval_fn is not None and evaluated != trainer.current_step:
        evaluate()
    if saved != trainer.current_step:
        save()
    engine.save_model(output_dir / "final", trainer.model_writer(), atomic=True)
    engine.finish(output_dir, output_dir / plot.FIGURE_FILE, output_dir.name)  # metrics may live elsewhere
    return history


def _encoder(tokenizer, max_prompt_length: int | None, add_special_tokens: bool):
    """prompt text -> 1-D token tensor, keeping the last ``max_prompt_length`` tokens."""
    def encode(text: str) -> torch.Tensor:
        ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        return torch.tensor(ids[-max_prompt_length:] if max_prompt_length else ids, dtype=torch.long)
    return encode


def _ppo_iteration(trainer, reward_fn, batch_prompts: list[str], generation_kwargs: dict, encode=None,
                   batch_columns: dict | None = None) -> tuple[dict, list[dict]]:
    """generate -> score -> step -> log for one batch of prompts; returns the history row and the
    (prompt, completion, reward) rows of ``log_completions``."""
    encode = encode or _encoder(trainer.tokenizer, None, True)
    queries = [encode(p) for p in batch_prompts]
    responses = trainer.generate(queries, return_prompt=False, batch_size=len(queries), **generation_kwargs)
    texts = trainer.tokenizer.batch_decode(responses, skip_special_tokens=True)
    raw = reward_fn(batch_prompts, texts, **batch_columns) if batch_columns is not None else \
        reward_fn(batch_prompts, texts)
    scores = [float(s) for s in raw]
    if len(scores) != len(texts):
        raise ValueError(f"reward_fn returned {len(scores)} scores for {len(texts)} responses")
    with checkpoint.sigint_deferred("Ctrl-C: finishing this PPO update, then saving a checkpoint "
                                    "(Ctrl-C again to stop at once, without one)"):
        trainer.train_state.in_update = True
        stats = trainer.step(queries, responses, scores)
        trainer.log_stats(stats, {"query": batch_prompts, "response": texts}, scores)
        trainer.train_state.in_update = False
    row = {"step": trainer.current_step, "reward": float(np.mean(scores)), "kl": stats["objective/kl"],
           "kl_coef": stats["objective/kl_coef"], "loss": stats["ppo/loss/total"],
           "response_len": stats["tokens/responses_len_mean"]}
    return row, [{"prompt": p, "completion": t, "reward": s} for p, t, s in zip(batch_prompts, texts, scores)]


def build_agent(trainer, tools, environment_factory, tool_parser, generation_kwargs: dict,
                max_prompt_length: int | None) -> Agent | None:
    """The multi-turn rollout settings of ``train_ppo``, or None for single-turn responses.

    A dotted path that does not import, a tool without a schema or a broken factory is a
    ConfigError naming the PPOConfig field.
    """
    from .online import resolve_environments, resolve_tools

    cfg = trainer.config
    tools = tools if tools is not None else cfg.tools
    environment_factory = environment_factory if environment_factory is not None else cfg.environment_factory
    if not tools and environment_factory is None and tool_parser is None:
        return None
    if trainer.is_encoder_decoder:
        raise ValueError("multi-turn episodes (tools, environment_factory) are for causal LMs, not an "
                         "encoder-decoder policy")
    tools = resolve_tools(tools, "PPOConfig")
    environment_factory = resolve_environments(environment_factory, "PPOConfig")
    try:
        return Agent(trainer.tokenizer, tools=tools, environment_factory=environment_factory,
                     environment_column=cfg.environment_column,
                     max_tool_calling_iterations=cfg.max_tool_calling_iterations,
                     max_completion_length=int(generation_kwargs["max_new_tokens"]),
                     max_prompt_length=max_prompt_length, tool_timeout=cfg.tool_timeout, tool_parser=tool_parser)
    except (TypeError, ValueError) as err:
        raise ConfigError("PPOConfig", "tools" if str(err).startswith("tool") else "environment_factory",
                          str(err)) from None


def _accepts(fn, name: str) -> bool:
    """``fn`` takes the keyword ``name`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == name and p.kind is not p.POSITIONAL_ONLY) for p in params)


def _episode_reward(reward_fn, with_columns: bool) -> RewardFunc:
    """``reward_fn`` as a reward function over episodes: the batch's columns when train got any,
    ``environments`` / ``episodes`` when it takes them."""
    extra = [name for name in ("environments", "episodes") if _accepts(reward_fn, name)]

    def reward(prompts, completions, completion_ids, environments, episodes, **columns):
        kwargs = dict(columns) if with_columns else {}
        given = {"environments": environments, "episodes": episodes}
        kwargs.update({name: given[name] for name in extra})
        return reward_fn(prompts, completions, **kwargs)

    return RewardFunc("reward_fn", reward, "train(reward_fn)")


def _no_reward(funcs, weights, prompts, completions, columns):
    n = len(prompts)
    return torch.zeros(n), torch.zeros(n, 0)


def _episode_iteration(trainer, agent: Agent, completions: Completions, reward_fn, batch_prompts: list,
                       batch_columns: dict | None) -> tuple[dict, list[dict]]:
    """sample episodes -> score -> step (policy masks, environment rewards per token) -> log; as ``_ppo_iteration``."""
    device = trainer.accelerator.device
    funcs = [_episode_reward(reward_fn, batch_columns is not None)] if reward_fn is not None else []
    completions.synced_at = trainer.current_step  # a rollout engine: PPOTrainer pushes the weights after each step
    with trainer.mechanics.autocast():
        sampled = sample_episodes(trainer.unwrapped_model, trainer.tokenizer, completions, agent, funcs,
                                  batch_prompts, batch_columns or {}, 1, device=device, step=trainer.current_step,
                                  score_fn=score if funcs else _no_reward)
    scores = [float(s) for s in sampled.rewards]
    token_rewards = [torch.tensor(environment_token_rewards(e) or [0.0], dtype=torch.float32, device=device)
                     for e in sampled.episodes]  # an episode that never started: one masked EOS
    totals = [s + float(t.sum()) for s, t in zip(scores, token_rewards)]
    texts = [trainer.tokenizer.decode(e.ids, skip_special_tokens=True) for e in sampled.episodes]
    with checkpoint.sigint_deferred("Ctrl-C: finishing this PPO update, then saving a checkpoint "
                                    "(Ctrl-C again to stop at once, without one)"):
        trainer.train_state.in_update = True
        stats = trainer.step(sampled.queries, sampled.responses, scores, response_masks=sampled.masks,
                             token_rewards=token_rewards)
        metrics = episode_metrics(sampled.episodes)
        stats.update(metrics)
        trainer.log_stats(stats, {"query": [str(p) for p in sampled.prompts], "response": texts}, totals)
        trainer.train_state.in_update = False
    row = {"step": trainer.current_step, "reward": float(np.mean(totals)), "kl": stats["objective/kl"],
           "kl_coef": stats["objective/kl_coef"], "loss": stats["ppo/loss/total"],
           "response_len": stats["tokens/responses_len_mean"], "tool_calls": metrics["tools/call_frequency"]}
    return row, [{"prompt": p, "completion": c, "reward": r}
                 for p, c, r in zip(sampled.prompts, sampled.completions, totals)]


def _check_prompts(trainer, prompts) -> None:
    state = trainer.train_state
    if state.prompt_count is not None and state.prompt_count != len(prompts):
        raise ValueError(f"the checkpoint was trained on {state.prompt_count} prompts, train() got {len(prompts)}; "
                         f"pass the same prompts to resume exactly (or start a new output_dir)")
    state.prompt_count = len(prompts)


def _ptx_position(trainer) -> int | None:
    """Batches the ptx stream has served (its data position); None without ptx data."""
    return trainer.ptx.consumed if trainer.ptx is not None else None


def _boundary(trainer) -> dict:
    """What moves between PPO updates without touching the weights: the RNG (sampling) and the prompt
    sampler; a Ctrl-C before the next update checkpoints these as they were after the last one."""
    return {"current_step": trainer.current_step, "rng": checkpoint.rng_state(),
            "prompt_rng": trainer.train_state.prompt_rng.getstate(),
            "metrics_offset": checkpoint.metrics_size(trainer.mechanics.metrics_path)}


def save_checkpoint(trainer, path, save_total_limit: int | None = None, point: dict | None = None) -> Path:
    """Policy, tokenizer, critic and the full trainer state, in the shared checkpoint layout, atomically;
    every process calls it.

    ``point``: the RNG, prompt-sampler and metrics position of a past moment of this same step
    (``_boundary``), instead of now.
    """
    path = Path(path)
    if path.name != f"checkpoint-{trainer.current_step}":
        raise ValueError(f"a PPO checkpoint folder is named checkpoint-{trainer.current_step}, got {path.name}")
    point = point or _boundary(trainer)
    method = {"current_step": trainer.current_step, "kl_ctl": trainer.kl_ctl.state_dict(),
              "running": trainer.running.state_dict(), "shuffle_rng": trainer._shuffle.get_state(),
              "prompt_rng": point["prompt_rng"], "prompt_count": trainer.train_state.prompt_count,
              "ptx_consumed": _ptx_position(trainer)}
    summary = {"trainer": "PPO", "current_step": trainer.current_step, "config": trainer.config.to_dict()}
    return trainer.mechanics.save_checkpoint(
        path.parent, trainer.current_step, section="ppo", method_state=method, optimizer=trainer.optimizer,
        scheduler=trainer.lr_scheduler, writer=trainer.model_writer(), summary=summary, limit=save_total_limit,
        rng=point["rng"], metrics_offset=point["metrics_offset"],
        extra={"critic_optimizer": trainer.critic_optimizer.state_dict()} if trainer.critic_optimizer is not None
        else None)


def load_checkpoint(trainer, path) -> None:
    """Restore what ``save_checkpoint`` wrote into an existing (fresh) trainer."""
    path = Path(path)
    state = trainer.mechanics.read_checkpoint(path, "PPO", "ppo")

    def load_weights(folder: Path) -> None:
        model = trainer.unwrapped_model
        checkpoint.load_model_weights(model.pretrained_model, folder)  # a LoRA policy: its adapter
        model.v_head.load_state_dict(load_file(folder / "value_head.safetensors"))
        if trainer.critic is not None:
            checkpoint.load_weights(trainer.critic.model, folder / "critic")

    def restore_method(state: dict) -> None:
        ppo = state["ppo"]
        trainer.kl_ctl.load_state_dict(ppo["kl_ctl"])
        trainer.running.load_state_dict(ppo["running"])
        trainer._shuffle.set_state(ppo["shuffle_rng"])
        trainer.train_state.prompt_rng.setstate(ppo["prompt_rng"])
        trainer.train_state.prompt_count = ppo["prompt_count"]
        if trainer.ptx is not None and ppo["ptx_consumed"] is not None:
            trainer.ptx.fast_forward(ppo["ptx_consumed"])
        trainer.current_step = ppo["current_step"]
        if trainer.critic_optimizer is not None:  # the critic's own optimiser (one per model under FSDP2)
            if "critic_optimizer" not in state:
                raise ValueError(f"{path} holds one optimiser, this trainer has a policy and a critic optimiser; "
                                 f"resume with the optimiser setting of the run that wrote it")
            trainer.critic_optimizer.load_state_dict(state["critic_optimizer"])

    trainer.mechanics.restore(path, state, load_weights=load_weights, optimizer=trainer.optimizer,
                              scheduler=trainer.lr_scheduler, restore_method=restore_method,
                              step=lambda: trainer.current_step)
