"""The one training loop: batches -> ``step_fn`` -> optimiser, with everything around it.

A method (SFT, reward, DPO) supplies a tokenized dataset, a collator and
``step_fn(model, batch) -> (loss, metrics)``; ``TrainLoop`` owns the rest: Accelerate
(devices, processes), mixed precision, gradient accumulation and clipping, AdamW with a
warm-up schedule, the progress bar, metrics (JSONL, TensorBoard, W&B), periodic
evaluation, atomic checkpoints, and exact resume (model, optimiser, scheduler, RNG and
position in the data). It is used by composition, never subclassed.

Shuffling is re-seeded from ``seed + epoch`` at each epoch, so the order of the data is a
function of the epoch alone and a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..models.compat import enable_checkpointing
from ..models.fused import fuse_activations
from .config import LoopConfig
from .mechanics import Mechanics, atomic_save_dir, build_optimizer, load_weights, set_seed

StepFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict]]
STATE_FILE = "trainer_state.json"


@dataclass
class LoopState:
    global_step: int = 0          # optimiser steps taken
    epoch: int = 0                # current epoch (0-based)
    batches_in_epoch: int = 0     # micro-batches of this epoch consumed at the last optimiser step


class TrainLoop:
    """Train ``model`` on ``train_dataset`` with ``step_fn``; see the module docstring."""

    def __init__(self, config: LoopConfig, model, train_dataset, collate_fn, step_fn: StepFn, *,
                 eval_dataset=None, eval_fn: Callable | None = None, save_fn: Callable | None = None,
                 sampler_fn: Callable | None = None, tokenizer=None):
        self.config, self.step_fn, self.eval_fn = config, step_fn, eval_fn
        self.train_dataset, self.eval_dataset, self.collate_fn = train_dataset, eval_dataset, collate_fn
        self.sampler_fn = sampler_fn  # (dataset, seed) -> Sampler; default: seeded random order
        self.tokenizer = tokenizer
        self.save_fn = save_fn or self._save_pretrained
        self.output_dir = Path(config.output_dir)
        set_seed(config.seed)
        reporters = {r.strip() for r in config.report_to.split(",") if r.strip() and r.strip() != "none"}
        trackers = sorted(reporters - {"jsonl"})
        self.mechanics = Mechanics(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_grad_norm=config.max_grad_norm, log_with=trackers, logging_dir=str(self.output_dir),
            tracker_project_name="rlhfkit", tracker_config=config.to_dict(), jsonl="jsonl" in reporters)
        self.accelerator = self.mechanics.accelerator
        if config.gradient_checkpointing:
            enable_checkpointing(model)
        if config.fuse_activations:
            fuse_activations(model)
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]  # no weight decay on biases and norms
        other = [p for p in params if p.dim() < 2]
        self.optimizer = build_optimizer(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}],
            "adamw", config.learning_rate, config.weight_decay, betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon)
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self.params = params
        self.batches_per_epoch = len(self._loader(0))
        if self.batches_per_epoch == 0:
            raise ValueError("the training dataset is empty")
        self.updates_per_epoch = math.ceil(self.batches_per_epoch / config.gradient_accumulation_steps)
        self.total_steps = (config.max_steps if config.max_steps > 0
                            else math.ceil(self.updates_per_epoch * config.num_train_epochs))
        warmup = config.warmup_steps or math.ceil(config.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(config.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=self.total_steps)
        self.state = LoopState()
        self.history: list[dict] = []

    # ------------------------------------------------------------------ data
    def _loader(self, epoch: int, dataset=None, batch_size: int | None = None, shuffle: bool = True) -> DataLoader:
        dataset = dataset if dataset is not None else self.train_dataset
        seed = self.config.seed + epoch
        if not shuffle:
            sampler = None
        elif self.sampler_fn is not None:
            sampler = self.sampler_fn(dataset, seed)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        loader = DataLoader(dataset, batch_size=batch_size or self.config.per_device_train_batch_size,
                            sampler=sampler, collate_fn=self.collate_fn,
                            num_workers=self.config.dataloader_num_workers)
        return self.accelerator.prepare_data_loader(loader, device_placement=True)

    # ------------------------------------------------------------------ the loop
    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        """Run to ``total_steps``; returns the logged rows. Writes the final model to ``output_dir``."""
        resume = resume_from_checkpoint or self.config.resume_from_checkpoint
        if resume:
            self.load_checkpoint(self._resolve_checkpoint(resume))
        cfg, st = self.config, self.state
        bar = tqdm(total=self.total_steps, initial=st.global_step, desc=type(self.config).__name__.replace("Config", ""),
                   disable=cfg.disable_tqdm or not self.accelerator.is_main_process, dynamic_ncols=True)
        window: list[dict] = []
        t_last = time.time()
        try:
            while st.global_step < self.total_steps:
                loader = self._loader(st.epoch)
                skip = st.batches_in_epoch
                if skip:
                    loader = self.accelerator.skip_first_batches(loader, skip)
                self.model.train()
                for i, batch in enumerate(loader, start=skip + 1):
                    with self.mechanics.autocast():
                        loss, metrics = self.step_fn(self.model, batch)
                    self.mechanics.backward(loss)
                    window.append({"loss": loss.detach(), **{k: v.detach() for k, v in metrics.items()}})
                    last = i == skip + len(loader)
                    grad_norm = self.mechanics.optimizer_step(self.optimizer, self.params, self.scheduler, force=last)
                    if self.mechanics.pending:
                        continue
                    st.global_step += 1
                    st.batches_in_epoch = i
                    bar.update(1)
                    if st.global_step % cfg.logging_steps == 0 or st.global_step == self.total_steps:
                        row = self._log(window, grad_norm, time.time() - t_last)
                        window, t_last = [], time.time()
                        bar.set_postfix(loss=f"{row['train/loss']:.4f}")
                    if cfg.eval_steps and st.global_step % cfg.eval_steps == 0:
                        self.evaluate()
                    if cfg.save_steps and st.global_step % cfg.save_steps == 0:
                        self.save_checkpoint()
                    if st.global_step >= self.total_steps:
                        break
                else:
                    st.epoch, st.batches_in_epoch = st.epoch + 1, 0
                    continue
                break
        except KeyboardInterrupt:
            self.save_checkpoint()  # the last completed optimiser step; a resume continues from it
            raise
        finally:
            bar.close()
        evaluated_last = bool(cfg.eval_steps) and st.global_step % cfg.eval_steps == 0
        if self.eval_dataset is not None and self.eval_fn is not None and not evaluated_last:
            self.evaluate()
        self.save_model(self.output_dir)
        self.mechanics.end()
        return self.history

    def _log(self, window: list[dict], grad_norm, seconds: float) -> dict:
        means = {k: torch.stack([w[k].float() for w in window]).mean() for k in window[0]}
        means = {k: self.accelerator.reduce(v.to(self.accelerator.device), reduction="mean").item()
                 for k, v in means.items()}
        row = {f"train/{k}": v for k, v in means.items()}
        row.update({"train/learning_rate": self.scheduler.get_last_lr()[0], "train/epoch": self._epoch_float(),
                    "train/seconds_per_step": seconds / max(1, len(window) // self.config.gradient_accumulation_steps)})
        if grad_norm is not None:
            row["train/grad_norm"] = float(grad_norm)
        self.mechanics.log(row, step=self.state.global_step)
        self.history.append({"step": self.state.global_step, **row})
        return row

    def _epoch_float(self) -> float:
        return self.state.epoch + self.state.batches_in_epoch / self.batches_per_epoch

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Run ``eval_fn(model, loader)`` on the eval dataset; logs ``eval/*`` metrics."""
        if self.eval_dataset is None or self.eval_fn is None:
            return {}
        self.model.eval()
        loader = self._loader(0, self.eval_dataset, self.config.per_device_eval_batch_size, shuffle=False)
        with self.mechanics.autocast():
            metrics = self.eval_fn(self.model, loader, self.accelerator)
        row = {f"eval/{k}": float(v) for k, v in metrics.items()}
        self.mechanics.log(row, step=self.state.global_step)
        self.history.append({"step": self.state.global_step, **row})
        self.model.train()
        return row

    # ------------------------------------------------------------------ saving and resuming
    def _save_pretrained(self, model, path: Path) -> None:
        """Default ``save_fn``: a Transformers checkpoint (plus the tokenizer when given)."""
        model.save_pretrained(path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)

    def save_model(self, path) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.save_fn(self.accelerator.unwrap_model(self.model), Path(path))

    def save_checkpoint(self) -> Path:
        """Model, optimiser, scheduler, RNG and loop state in ``checkpoint-<step>``, written atomically."""
        path = self.output_dir / f"checkpoint-{self.state.global_step}"
        self.accelerator.wait_for_everyone()
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if self.accelerator.is_main_process:
            def write(tmp: Path):
                self.save_fn(self.accelerator.unwrap_model(self.model), tmp)
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
                torch.save(rng, tmp / "rng_state.pt")
                (tmp / STATE_FILE).write_text(json.dumps({**self.state.__dict__, "config": self.config.to_dict()},
                                                         indent=2, default=str))
            atomic_save_dir(path, write)
            self._rotate_checkpoints()
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: Path) -> None:
        if not (path / STATE_FILE).exists():
            raise ValueError(f"{path} is not a checkpoint written by rlhfkit (no {STATE_FILE})")
        load_weights(self.accelerator.unwrap_model(self.model), path)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        rng = torch.load(path / "rng_state.pt", weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        saved = json.loads((path / STATE_FILE).read_text())
        self.state = LoopState(saved["global_step"], saved["epoch"], saved["batches_in_epoch"])

    def _checkpoints(self) -> list[Path]:
        found = [p for p in self.output_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def _resolve_checkpoint(self, resume) -> Path:
        if str(resume) == "latest" or resume is True:
            found = self._checkpoints()
            if not found:
                raise ValueError(f"resume_from_checkpoint='latest' but {self.output_dir} has no checkpoint-<step>")
            return found[-1]
        return Path(resume)

    def _rotate_checkpoints(self) -> None:
        limit = self.config.save_total_limit
        if limit:
            for old in self._checkpoints()[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
