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

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from .. import plot
from . import checkpoint, completion_log
from .mechanics import atomic_save_dir, load_weights
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
              log_completions: bool = False, num_completions_to_print: int | None = None) -> list[dict]:
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
    """
    cfg = trainer.config
    if not prompts:
        raise ValueError("train_ppo needs a non-empty list of prompts")
    steps = steps if steps is not None else cfg.steps
    output_dir = Path(output_dir or cfg.output_dir)
    save_steps = save_steps if save_steps is not None else cfg.save_steps
    generation_kwargs = {**DEFAULT_GENERATION, "pad_token_id": trainer.pad_token_id, **(generation_kwargs or {})}
    if trainer.accelerator.is_main_process:
        checkpoint.clean_stale(output_dir)
    trainer.accelerator.wait_for_everyone()
    if resume_from_checkpoint:
        load_checkpoint(trainer, checkpoint.resolve(output_dir, resume_from_checkpoint))
    elif trainer.accelerator.is_main_process:  # rows past this step belong to a run that died
        checkpoint.truncate_metrics(trainer.mechanics.metrics_path, None, trainer.current_step)
    main = trainer.accelerator.is_main_process
    if main:  # log_completions rows past the checkpoint, as metrics.jsonl's
        checkpoint.truncate_metrics(output_dir / completion_log.FILE, None, trainer.current_step)
    _check_prompts(trainer, prompts)
    state = trainer.train_state
    history: list[dict] = []
    bar = tqdm(total=steps, initial=min(trainer.current_step, steps), desc="ppo", disable=not progress,
               dynamic_ncols=True)
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
        trainer.mechanics.log(metrics, step=trainer.current_step)
        history.append({"step": trainer.current_step, **metrics})
        evaluated = trainer.current_step
        if main:
            write_console(console_line(metrics, trainer.current_step))

    boundary = _boundary(trainer)
    try:
        while trainer.current_step < steps:
            idx = [state.prompt_rng.randrange(len(prompts)) for _ in range(cfg.batch_size)]
            batch_columns = {k: [v[i] for i in idx] for k, v in (columns or {}).items()}
            row, samples = _ppo_iteration(trainer, reward_fn, [prompts[i] for i in idx], generation_kwargs, encode,
                                          batch_columns if columns else None)
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
    if trainer.accelerator.is_main_process:
        atomic_save_dir(output_dir / "final", trainer.save_pretrained)
    trainer.mechanics.end()
    metrics_path = trainer.mechanics.metrics_path
    if main and metrics_path is not None and metrics_path.exists():  # the whole run, a resumed one too
        plot.save_learning_curve(metrics_path.parent, output_dir / plot.FIGURE_FILE, output_dir.name)
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
    """Policy, tokenizer, critic and the full trainer state, in the shared checkpoint layout, atomically.

    ``point``: the RNG, prompt-sampler and metrics position of a past moment of this same step
    (``_boundary``), instead of now.
    """
    path = Path(path)
    point = point or _boundary(trainer)
    rngs = checkpoint.rng_states_of_all_ranks(trainer.accelerator, point["rng"])
    if not trainer.accelerator.is_main_process:
        return path
    if path.name != f"checkpoint-{trainer.current_step}":
        raise ValueError(f"a PPO checkpoint folder is named checkpoint-{trainer.current_step}, got {path.name}")
    state = {
        "ppo": {"current_step": trainer.current_step, "kl_ctl": trainer.kl_ctl.state_dict(),
                "running": trainer.running.state_dict(), "shuffle_rng": trainer._shuffle.get_state(),
                "prompt_rng": point["prompt_rng"],
                "prompt_count": trainer.train_state.prompt_count, "ptx_consumed": _ptx_position(trainer)},
        "rng": rngs,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.lr_scheduler.state_dict() if trainer.lr_scheduler is not None else None,
        "mechanics": trainer.mechanics.state_dict(),
        "metrics_offset": point["metrics_offset"],
    }
    summary = {"trainer": "PPO", "current_step": trainer.current_step, "config": trainer.config.to_dict()}
    return checkpoint.save(path.parent, trainer.current_step, trainer.save_pretrained, state, summary,
                           save_total_limit)


def load_checkpoint(trainer, path) -> None:
    """Restore what ``save_checkpoint`` wrote into an existing (fresh) trainer."""
    path = Path(path)
    state = checkpoint.load(path, "PPO")
    if "ppo" not in state:
        raise ValueError(f"{path} is not a PPO checkpoint (it was written by the SFT/reward/DPO training loop)")
    model = trainer.accelerator.unwrap_model(trainer._train_model)
    checkpoint.load_model_weights(model.pretrained_model, path)  # a LoRA policy: its adapter
    model.v_head.load_state_dict(load_file(path / "value_head.safetensors"))
    if trainer.critic is not None:
        load_weights(trainer.critic.model, path / "critic")
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.lr_scheduler is not None and state["scheduler"] is not None:
        trainer.lr_scheduler.load_state_dict(state["scheduler"])
    trainer.mechanics.load_state_dict(state["mechanics"])
    ppo = state["ppo"]
    trainer.kl_ctl.load_state_dict(ppo["kl_ctl"])
    trainer.running.load_state_dict(ppo["running"])
    trainer._shuffle.set_state(ppo["shuffle_rng"])
    trainer.train_state.prompt_rng.setstate(ppo["prompt_rng"])
    trainer.train_state.prompt_count = ppo["prompt_count"]
    if trainer.ptx is not None and ppo["ptx_consumed"] is not None:
        trainer.ptx.fast_forward(ppo["ptx_consumed"])
    trainer.current_step = ppo["current_step"]
    if trainer.accelerator.is_main_process:
        checkpoint.truncate_metrics(trainer.mechanics.metrics_path, state["metrics_offset"], trainer.current_step)
    checkpoint.set_rank_rng_state(trainer.accelerator, state["rng"])  # last: nothing above may draw from it
