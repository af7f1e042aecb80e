"""The modern entry point: ``train_ppo(trainer, reward_fn, prompts)`` runs the whole loop.

It is the classic loop written once (sample prompts -> ``generate`` -> ``reward_fn`` ->
``step`` -> ``log_stats``) with a progress bar, JSONL/TensorBoard metrics, periodic
atomic checkpoints and ``resume_from_checkpoint``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from .mechanics import atomic_save_dir, load_weights

RewardFn = Callable[[list[str], list[str]], Sequence[float]]
DEFAULT_GENERATION = dict(do_sample=True, top_k=0, top_p=1.0, max_new_tokens=32)
STATE_FILE = "trainer_state.pt"


def train_ppo(trainer, reward_fn: RewardFn, prompts: Sequence[str], *, steps: int | None = None,
              generation_kwargs: dict | None = None, output_dir: str | None = None, save_steps: int | None = None,
              resume_from_checkpoint: str | None = None, progress: bool = True) -> list[dict]:
    """Run ``steps`` PPO iterations (default ``config.steps``); returns the per-step log rows.

    ``reward_fn(prompts, responses) -> scores`` gets decoded text, one score per response:
    a reward model's scorer, a rule, or a human queue. Checkpoints go to
    ``output_dir/checkpoint-<step>`` every ``save_steps`` steps and at the end; Ctrl-C
    writes one before stopping.
    """
    cfg = trainer.config
    if not prompts:
        raise ValueError("train_ppo needs a non-empty list of prompts")
    steps = steps if steps is not None else cfg.steps
    output_dir = Path(output_dir or cfg.output_dir)
    save_steps = save_steps if save_steps is not None else cfg.save_steps
    generation_kwargs = {**DEFAULT_GENERATION, "pad_token_id": trainer.pad_token_id, **(generation_kwargs or {})}
    if resume_from_checkpoint:
        load_checkpoint(trainer, resume_from_checkpoint)
    rng = random.Random(cfg.seed + trainer.current_step)
    history: list[dict] = []
    bar = tqdm(total=steps, initial=min(trainer.current_step, steps), desc="ppo", disable=not progress,
               dynamic_ncols=True)
    try:
        while trainer.current_step < steps:
            batch_prompts = [prompts[rng.randrange(len(prompts))] for _ in range(cfg.batch_size)]
            queries = [torch.tensor(trainer.tokenizer(p)["input_ids"], dtype=torch.long) for p in batch_prompts]
            responses = trainer.generate(queries, return_prompt=False, batch_size=cfg.batch_size, **generation_kwargs)
            texts = trainer.tokenizer.batch_decode(responses, skip_special_tokens=True)
            scores = [float(s) for s in reward_fn(batch_prompts, texts)]
            if len(scores) != len(texts):
                raise ValueError(f"reward_fn returned {len(scores)} scores for {len(texts)} responses")
            stats = trainer.step(queries, responses, scores)
            trainer.log_stats(stats, {"query": batch_prompts, "response": texts}, scores)
            row = {"step": trainer.current_step, "reward": float(np.mean(scores)), "kl": stats["objective/kl"],
                   "kl_coef": stats["objective/kl_coef"], "loss": stats["ppo/loss/total"],
                   "response_len": stats["tokens/responses_len_mean"]}
            history.append(row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}")
            if save_steps and trainer.current_step % save_steps == 0:
                save_checkpoint(trainer, output_dir / f"checkpoint-{trainer.current_step}")
    except KeyboardInterrupt:
        save_checkpoint(trainer, output_dir / f"checkpoint-{trainer.current_step}")
        raise
    finally:
        bar.close()
    save_checkpoint(trainer, output_dir / f"checkpoint-{trainer.current_step}")
    trainer.save_pretrained(output_dir / "final")
    trainer.mechanics.end()
    return history


def save_checkpoint(trainer, path) -> Path:
    """Policy, tokenizer, critic and the full trainer state, written atomically."""
    if not trainer.accelerator.is_main_process:
        return Path(path)

    def write(tmp: Path):
        trainer.save_pretrained(tmp)
        state = {
            "step": trainer.current_step,
            "optimizer": trainer.optimizer.state_dict(),
            "lr_scheduler": trainer.lr_scheduler.state_dict() if trainer.lr_scheduler is not None else None,
            "kl_ctl": trainer.kl_ctl.state_dict(),
            "running": trainer.running.state_dict(),
            "shuffle_rng": trainer._shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "config": trainer.config.to_dict(),
        }
        torch.save(state, tmp / STATE_FILE)

    return atomic_save_dir(path, write)


def load_checkpoint(trainer, path) -> None:
    """Restore what ``save_checkpoint`` wrote into an existing trainer."""
    path = Path(path)
    if not (path / STATE_FILE).exists():
        raise ValueError(f"{path} is not a PPO checkpoint (no {STATE_FILE}); pass a checkpoint-<step> folder")
    model = trainer.accelerator.unwrap_model(trainer._train_model)
    load_weights(model.pretrained_model, path)
    model.v_head.load_state_dict(load_file(path / "value_head.safetensors"))
    if trainer.critic is not None:
        load_weights(trainer.critic.model, path / "critic")
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.lr_scheduler is not None and state["lr_scheduler"] is not None:
        trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    trainer.kl_ctl.load_state_dict(state["kl_ctl"])
    trainer.running.load_state_dict(state["running"])
    trainer._shuffle.set_state(state["shuffle_rng"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    trainer.current_step = state["step"]

