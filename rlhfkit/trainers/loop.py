"""The training loop of the methods trained on a dataset: batches -> ``step_fn`` -> optimiser, on the engine.

A method (SFT, reward, DPO, KTO) supplies a tokenized dataset, a collator and
``step_fn(model, batch) -> (loss, metrics)``; ``TrainLoop`` runs the epochs and steps and drives
``mechanics.Mechanics`` for the rest: Accelerate (devices, processes), mixed precision, gradient
accumulation and clipping, the optimiser (``optim``, AdamW by default) with its warm-up schedule,
the progress bar, metrics (JSONL, TensorBoard, W&B) and atomic checkpoints. The loop adds periodic
evaluation and exact resume (model, optimiser, scheduler, RNG, position in the data and log window;
layout in ``checkpoint``). It is used by composition, never subclassed.

Shuffling is re-seeded from ``seed + epoch`` at each epoch, so the order of the data is a
function of the epoch alone and a resumed run sees the same batches as an uninterrupted one.
Every DataLoader has its own generator: creating an iterator must not draw from the global
torch RNG, or a resumed run (which creates one more) would see other dropout masks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, RandomSampler

from ..models.compat import enable_checkpointing
from ..models.fused import fuse_activations
from . import checkpoint
from .config import LoopConfig
from .mechanics import Mechanics, build_optimizer, param_groups, schedule, set_seed
from .trackers import resolve_trackers

StepFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict]]
# A resumed run must see the same batches: these fields fix what "batch k of epoch e" is.
DATA_FIELDS = ("seed", "per_device_train_batch_size", "gradient_accumulation_steps")


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
        self.save_fn = save_fn or self._write
        self.output_dir = Path(config.output_dir)
        set_seed(config.seed)
        trackers = resolve_trackers(config.report_to)  # metrics.jsonl is written whatever report_to says
        self.mechanics = Mechanics(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_grad_norm=config.max_grad_norm, log_with=trackers, logging_dir=str(self.output_dir),
            tracker_project_name="rlhfkit", tracker_config=config.to_dict(), jsonl=True,
            micro_batch_size=config.per_device_train_batch_size)
        self.accelerator = self.mechanics.accelerator
        if config.gradient_checkpointing:
            enable_checkpointing(model)
        if config.fuse_activations:
            fuse_activations(model)
        if config.torch_compile:
            model.compile()  # in place: the module, its names and save_pretrained stay as they are
        self.optimizer = build_optimizer(
            param_groups(model, config.weight_decay), config.optim, config.learning_rate, config.weight_decay,
            betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
        if self.mechanics.sharded and (config.save_steps or config.save_strategy == "epoch"
                                       or config.resume_from_checkpoint):
            raise ValueError("save_steps and resume_from_checkpoint are not supported under FSDP or DeepSpeed yet, "
                             "nor save_strategy='epoch' (the optimiser state is sharded across ranks); set "
                             "save_steps=0: the final model is still saved whole to output_dir (docs/distributed.md)")
        self.model, self.optimizer, self.params = self.mechanics.prepare(model, self.optimizer)
        self.batches_per_epoch = len(self._loader(0))
        if self.batches_per_epoch == 0:
            raise ValueError("the training dataset is empty")
        self.updates_per_epoch = math.ceil(self.batches_per_epoch / config.gradient_accumulation_steps)
        self.total_steps = (config.max_steps if config.max_steps > 0
                            else math.ceil(self.updates_per_epoch * config.num_train_epochs))
        self.scheduler = schedule(config, self.optimizer, self.total_steps)
        self.state = LoopState()
        self._epoch_end = False  # the last optimiser step ended an epoch (the "epoch" strategies act then)
        self.history: list[dict] = []
        self._window: list[dict] = []   # metrics of the micro-batches since the last log row
        self._resume_point: dict | None = None  # RNG and window as they were after the last optimiser step

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
                            num_workers=self.config.dataloader_num_workers,
                            generator=torch.Generator().manual_seed(seed))
        return self.accelerator.prepare_data_loader(loader, device_placement=True)

    # ------------------------------------------------------------------ the loop
    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        """Run to ``total_steps``; returns this call's logged rows. Writes the final model to ``output_dir``."""
        self.mechanics.start(self.output_dir, resume_from_checkpoint or self.config.resume_from_checkpoint,
                             self.load_checkpoint, lambda: self.state.global_step)
        cfg, st = self.config, self.state
        bar = self.mechanics.progress(self.total_steps, st.global_step, self._trainer_name(), cfg.disable_tqdm)
        self._t_last = time.time()
        self._resume_point = self._snapshot()
        try:
            while st.global_step < self.total_steps:
                loader, skip = self._loader(st.epoch), st.batches_in_epoch
                if skip:
                    loader = self.accelerator.skip_first_batches(loader, skip)
                self.model.train()
                for i, batch in enumerate(loader, start=skip + 1):
                    with self.mechanics.autocast():
                        loss, metrics = self.step_fn(self.model, batch)
                    last = i == skip + len(loader)
                    self.mechanics.backward(loss, last=last)
                    if cfg.logging_strategy != "no":  # else nothing would ever empty the window
                        self._window.append({"loss": loss.detach(), **{k: v.detach() for k, v in metrics.items()}})
                    grad_norm = self.mechanics.optimizer_step(self.optimizer, self.params, self.scheduler, force=last)
                    if self.mechanics.pending:
                        continue
                    with checkpoint.sigint_deferred():  # a Ctrl-C lands before this step or after its snapshot
                        st.global_step, st.batches_in_epoch = st.global_step + 1, i
                        self._epoch_end = last
                        bar.update(1)
                        self._log_step(grad_norm, bar)
                    self._after_step()
                    if st.global_step >= self.total_steps:
                        break
                else:
                    st.epoch, st.batches_in_epoch = st.epoch + 1, 0
                    continue
                break
        except KeyboardInterrupt:
            if self.mechanics.sharded:  # no exact-resume checkpoint of a sharded optimiser (see __init__)
                raise
            if self._resume_point["step"] == st.global_step:  # else a second Ctrl-C cut the step's bookkeeping
                self.save_checkpoint(self._resume_point)  # the last completed optimiser step; a resume continues from it
            raise
        finally:
            bar.close()
        evaluated_last = self._due(cfg.eval_strategy, cfg.eval_steps)
        if cfg.eval_strategy != "no" and self.eval_dataset is not None and self.eval_fn is not None \
                and not evaluated_last:
            self.evaluate()
        self.save_model(self.output_dir)
        self.mechanics.finish(self.output_dir)
        return self.history

    def _trainer_name(self) -> str:
        return type(self.config).__name__.replace("Config", "")

    def _log_step(self, grad_norm, bar) -> None:
        """Log optimiser step ``state.global_step`` (when due) and record it as the point a Ctrl-C saves."""
        cfg, step = self.config, self.state.global_step
        if cfg.logging_strategy != "no" and (self._due(cfg.logging_strategy, cfg.logging_steps)
                                             or step == self.total_steps):
            row = self._log(self._window, grad_norm, time.time() - self._t_last)
            self._window, self._t_last = [], time.time()
            bar.set_postfix(loss=f"{row['train/loss']:.4f}")
        self._resume_point = self._snapshot()

    def _after_step(self) -> None:
        """Evaluate and checkpoint after optimiser step ``state.global_step`` (neither moves the RNG)."""
        cfg = self.config
        if self._due(cfg.eval_strategy, cfg.eval_steps):
            self.evaluate()
        if self._due(cfg.save_strategy, cfg.save_steps):
            self.save_checkpoint()

    def _due(self, strategy: str | None, every: int) -> bool:
        """Whether a ``strategy`` ("steps", "epoch", "no"; None: as "steps") acts after the current step."""
        if strategy == "epoch":
            return self._epoch_end
        return strategy != "no" and every > 0 and self.state.global_step % every == 0

    def _snapshot(self) -> dict:
        """What changes between optimiser steps: RNG (dropout, sampling) and the log window."""
        return {"rng": checkpoint.rng_state(), "window": list(self._window), "step": self.state.global_step}

    def _log(self, window: list[dict], grad_norm, seconds: float) -> dict:
        means = {k: torch.stack([w[k].float() for w in window]).mean() for k in window[0]}
        means = {k: self.accelerator.reduce(v.to(self.accelerator.device), reduction="mean").item()
                 for k, v in means.items()}
        row = {f"train/{k}": v for k, v in means.items()}
        row.update({"train/learning_rate": self.scheduler.get_last_lr()[0], "train/epoch": self._epoch_float(),
                    "train/seconds_per_step": seconds / max(1, len(window) // self.config.gradient_accumulation_steps)})
        if grad_norm is not None:
            row["train/grad_norm"] = float(grad_norm)
        return self.mechanics.record(row, self.state.global_step, self.history)  # with disable_tqdm too

    def _epoch_float(self) -> float:
        return self.state.epoch + self.state.batches_in_epoch / self.batches_per_epoch

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Run ``eval_fn(model, loader)`` on the eval dataset; logs ``eval/*`` metrics.

        No global RNG moves (``checkpoint.rng_preserved``): training is the same with or without it.
        """
        if self.eval_dataset is None or self.eval_fn is None:
            return {}
        self.model.eval()
        try:
            with checkpoint.rng_preserved():
                loader = self._loader(0, self.eval_dataset, self.config.per_device_eval_batch_size, shuffle=False)
                with self.mechanics.autocast():
                    metrics = self.eval_fn(self.model, loader, self.accelerator)
        finally:
            self.model.train()
        return self.mechanics.record({f"eval/{k}": float(v) for k, v in metrics.items()}, self.state.global_step,
                                     self.history)

    # ------------------------------------------------------------------ saving and resuming
    def _write(self, model, path: Path, state_dict: dict | None = None) -> None:
        """Default ``save_fn``: a Transformers checkpoint (plus the tokenizer when given).

        ``state_dict``: the gathered full weights when the model is sharded (FSDP2, ZeRO-3);
        a custom ``save_fn`` gets it as a keyword only then."""
        model.save_pretrained(path, state_dict=state_dict)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)

    def save_model(self, path) -> None:
        self.mechanics.save_model(path, self.mechanics.model_writer(self.model, self.save_fn))

    def _data_settings(self) -> dict:
        """What fixes "batch k of epoch e": a resume with other values could not continue exactly."""
        return {k: getattr(self.config, k) for k in DATA_FIELDS} | {"world": self.accelerator.num_processes}

    def save_checkpoint(self, point: dict | None = None) -> Path:
        """Everything a resume needs in ``checkpoint-<step>`` (layout in ``checkpoint``), written atomically.

        ``point``: the RNG and log window to record (default: now). A Ctrl-C between optimiser
        steps records those of the last step, whose weights and optimiser state these are.
        """
        point = point or self._snapshot()
        st = self.state
        window = [{k: v.cpu() for k, v in row.items()} for row in point["window"]]
        summary = {"trainer": self._trainer_name(), **st.__dict__, "config": self.config.to_dict()}
        return self.mechanics.save_checkpoint(
            self.output_dir, st.global_step, section="loop", method_state=dict(st.__dict__), optimizer=self.optimizer,
            scheduler=self.scheduler, writer=self.mechanics.model_writer(self.model, self.save_fn), summary=summary,
            limit=self.config.save_total_limit, rng=point["rng"], extra={"window": window, "data": self._data_settings()})

    def load_checkpoint(self, path: Path) -> None:
        """Restore weights, optimiser, scheduler, RNG, data position and log window from ``path``."""
        path = Path(path)
        state = self.mechanics.read_checkpoint(path, "training-loop", "loop")
        changed = {k: (v, now) for k, v in state["data"].items()
                   if (now := self._data_settings().get(k)) != v}
        if changed:
            raise ValueError(f"cannot resume exactly from {path}: these settings differ from the checkpoint's "
                             f"(checkpoint, now): {changed}. Use the checkpoint's values or start a new output_dir")

        def restore_method(state: dict) -> None:
            self.state = LoopState(**state["loop"])
            device = self.accelerator.device
            self._window = [{k: v.to(device) for k, v in row.items()} for row in state["window"]]

        # a LoRA model: its adapter
        self.mechanics.restore(
            path, state, load_weights=lambda p: checkpoint.load_model_weights(self.accelerator.unwrap_model(self.model), p),
            optimizer=self.optimizer, scheduler=self.scheduler, restore_method=restore_method,
            step=lambda: self.state.global_step)
