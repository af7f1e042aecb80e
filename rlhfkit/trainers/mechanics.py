"""The engine: training mechanics written once, used by composition by every trainer.

``Mechanics`` owns what is not the method, at two levels:

- a step: device and processes (Accelerate), mixed precision, gradient accumulation, gradient
  clipping, the optimiser step (``backward``, ``optimizer_step``);
- a run: the optimiser's parameter groups and the learning-rate schedule (``param_groups``,
  ``schedule``), ``prepare``, metric rows (``record``: JSONL always when a logging dir is set,
  TensorBoard / W&B / Trackio through Accelerate's trackers, one console line), the progress bar,
  the start of a run (stale-save clean-up, resume or a fresh metrics file: ``start``), checkpoints
  in the one layout of ``checkpoint`` (``save_checkpoint`` / ``restore``: weights or LoRA adapter,
  optimiser, scheduler, accumulation and loss-scaler state, every rank's RNG, metrics position,
  plus the method's own section), the final model (``save_model``, gathered whole under FSDP2 and
  ZeRO-3) and the end of a run (``finish``: trackers closed, ``learning_curve.png``).

A method (``loop.TrainLoop`` for SFT/reward/DPO/KTO/distillation, ``online.OnlineRun`` for GRPO/RLOO,
``ppo``) says what a batch is and how it makes a loss, and when its own state is a resumable boundary.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs, ProjectConfiguration
from tqdm.auto import tqdm
from transformers import get_scheduler

from .. import plot
from . import checkpoint
from .checkpoint import atomic_save_dir, load_weights  # noqa: F401 - the trainers' public names
from .trackers import console_line, write_console


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def native_bf16(query=None) -> bool:
    """True where bfloat16 autocast runs natively: a CUDA GPU of compute capability >= 8.0 (Ampere on).

    ``query() -> (cuda_available, bf16_native)`` replaces the device query (tests). False on CPU,
    MPS and older GPUs (which emulate bf16 slowly), and when Accelerate is told to use the CPU.
    """
    if os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes"):
        return False
    if query is None:
        def query():
            if not torch.cuda.is_available():
                return False, False
            try:
                return True, torch.cuda.is_bf16_supported(including_emulation=False)
            except TypeError:  # torch < 2.3 has no including_emulation (and no emulation)
                return True, torch.cuda.is_bf16_supported()
    available, native = query()
    return bool(available and native)


def _adamw(groups, lr, weight_decay, fused: bool | None, **extra):
    """AdamW, fused where asked and the kernel takes the parameters (else the per-tensor loop)."""
    kwargs = dict(lr=lr, weight_decay=weight_decay, **extra)
    if not fused:
        return torch.optim.AdamW(groups, **kwargs)
    devices = {p.device.type for g in groups for p in g["params"]}
    try:
        return torch.optim.AdamW(groups, fused=len(devices) == 1 and devices <= {"cpu", "cuda"}, **kwargs)
    except (RuntimeError, TypeError):  # dtype or device the fused kernel does not take
        return torch.optim.AdamW(groups, **kwargs)


def _adafactor(groups, lr, weight_decay, **_):
    from transformers.optimization import Adafactor

    # TrainingArguments' "adafactor": the given learning rate and schedule, not Adafactor's relative steps
    return Adafactor(groups, lr=lr, weight_decay=weight_decay, scale_parameter=False, relative_step=False)


# name -> build(groups, lr, weight_decay, **adam_kwargs); the names are TrainingArguments' ``optim`` values
# (``config.OPTIMIZERS`` lists them for the configs). Weight decay comes from each parameter group when it has
# its own (no decay on biases and norms).
OPTIMIZER_BUILDERS = {
    "adamw_torch_fused": lambda groups, lr, wd, **extra: _adamw(groups, lr, wd, True, **extra),
    "adamw_torch": lambda groups, lr, wd, **extra: _adamw(groups, lr, wd, False, **extra),
    "adafactor": _adafactor,
    "sgd": lambda groups, lr, wd, **_: torch.optim.SGD(groups, lr=lr, weight_decay=wd),
    "adagrad": lambda groups, lr, wd, **_: torch.optim.Adagrad(groups, lr=lr, weight_decay=wd),
    "rmsprop": lambda groups, lr, wd, **_: torch.optim.RMSprop(groups, lr=lr, weight_decay=wd),
}


def build_optimizer(param_groups, name: str = "adam", lr: float = 1e-5, weight_decay: float = 0.0, **extra):
    """Adam (classic PPO), AdamW (``"adamw"``) or one of ``OPTIMIZER_BUILDERS``; ``param_groups`` may carry their own
    ``lr``. ``extra``: AdamW's betas and eps (other optimisers take none).

    The fused kernel (``"adamw"``, ``"adamw_torch_fused"``) updates all parameters in one pass; it
    exists on CPU and CUDA in torch >= 2.4 and is numerically the same algorithm as the per-tensor loop.
    """
    groups = [g for g in param_groups if g["params"]]
    if name == "adam":
        devices = {p.device.type for g in groups for p in g["params"]}
        try:
            return torch.optim.Adam(groups, lr=lr, fused=len(devices) == 1 and devices <= {"cpu", "cuda"}, **extra)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(groups, lr=lr, **extra)
    if name == "adamw":
        name = "adamw_torch_fused"
    if name not in OPTIMIZER_BUILDERS:
        raise ValueError(f"optimizer must be 'adam', 'adamw' or one of {', '.join(OPTIMIZER_BUILDERS)}, got {name!r}")
    return OPTIMIZER_BUILDERS[name](groups, lr, weight_decay, **extra)


class Mechanics:
    """Accelerator, optimiser stepping, logging and checkpoints for one run."""

    def __init__(self, *, mixed_precision: str = "no", gradient_accumulation_steps: int = 1,
                 max_grad_norm: float | None = None, log_with: str | list | None = None,
                 logging_dir: str | None = None, accelerator_kwargs: dict | None = None,
                 tracker_project_name: str = "rlhfkit", tracker_config: dict | None = None,
                 tracker_kwargs: dict | None = None, jsonl: bool = True, micro_batch_size: int | None = None,
                 step_key: str = "step", tracker_name: Callable[[str], str | None] | None = None):
        """``log_with``: Accelerate tracker name(s) ('tensorboard', 'wandb'); 'jsonl' or None for none.
        ``jsonl``: also append every log call to ``logging_dir/metrics.jsonl``.
        ``step_key``: the name of the step counter in each ``metrics.jsonl`` row and ``record``'s history (control
        PPO counts ``global_step``, environment steps); a resume cuts the file back by it.
        ``tracker_name(key) -> name or None``: a metric's name in the trackers where it differs from its name in
        ``metrics.jsonl`` (None: not sent to the trackers); default: the same name.
        ``micro_batch_size``: rows per backward on one process; DeepSpeed's config needs it
        (its ``train_micro_batch_size_per_gpu``), other modes ignore it.
        A ``run_name`` in ``tracker_config`` (the training configs have one) names the run in W&B and
        Trackio (``tracker_kwargs`` given for a tracker win); TensorBoard shows it among the hyperparameters."""
        kwargs = dict(accelerator_kwargs or {})
        names = [log_with] if isinstance(log_with, str) else list(log_with or [])
        trackers = [n for n in names if n != "jsonl"] or None
        if trackers is not None or logging_dir:
            kwargs.setdefault("project_config", ProjectConfiguration(project_dir=logging_dir or "runs",
                                                                     logging_dir=logging_dir or "runs"))
        deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        if deepspeed:  # DeepSpeed applies the accumulation (and its boundary) itself: it must know it
            kwargs.setdefault("gradient_accumulation_steps", gradient_accumulation_steps)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # Launched as several processes on a machine without GPUs: distributed CPU
            # (gloo). Accelerate would otherwise run each process alone on the same data.
            # Its cpu=True also drops DeepSpeed, whose CPU accelerator runs on gloo instead.
            if deepspeed:
                os.environ.setdefault("DS_ACCELERATOR", "cpu")
                kwargs["kwargs_handlers"] = [*kwargs.get("kwargs_handlers", []), InitProcessGroupKwargs(backend="gloo")]
            else:
                kwargs.setdefault("cpu", True)
        self.accelerator = Accelerator(log_with=trackers, **kwargs)
        _fsdp_on_cpu(self.accelerator)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            _fill_deepspeed_config(self.accelerator, micro_batch_size, gradient_accumulation_steps, max_grad_norm)
        # Autocast is ours, not Accelerate's: its process-wide state refuses a second
        # trainer with another precision in the same process (a notebook, a test suite).
        self.mixed_precision = mixed_precision
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if mixed_precision == "fp16" else None
        self.max_grad_norm = max_grad_norm
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.logging_dir = Path(logging_dir) if logging_dir and jsonl else None
        self.step_key, self.tracker_name = step_key, tracker_name
        self._micro = 0
        if trackers is not None:
            self.accelerator.init_trackers(tracker_project_name, config=_jsonable(tracker_config or {}),
                                           init_kwargs=tracker_init_kwargs(tracker_config, tracker_kwargs))

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def sharded(self) -> bool:
        """True under FSDP or DeepSpeed: weights or optimiser state live in pieces across ranks."""
        return self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    @staticmethod
    def trainable_params(model, optimizer) -> list:
        """The parameters of ``model`` that ``optimizer`` updates, in the model's order, as
        ``prepare`` left them: FSDP2 replaces each parameter with a sharded one (lists taken
        before go stale), and Accelerate's FSDP clipping recognises a model's parameters only
        by comparing the whole list in the model's order."""
        updated = {id(p) for group in optimizer.param_groups for p in group["params"]}
        found = [p for p in model.parameters() if id(p) in updated]
        # DeepSpeed's optimiser holds flat partitions instead of the model's parameters
        return found or [p for p in model.parameters() if p.requires_grad]

    def full_state_dict(self, model) -> dict | None:
        """The full weights of a sharded model, gathered to CPU (on the main process; other ranks
        get an empty dict); None when every rank holds them whole (one process, DDP).

        A collective under FSDP2 and ZeRO-3: every rank must call it, not only the one that saves.
        """
        if not self.sharded:
            return None
        state = self.accelerator.get_state_dict(model) or {}  # ZeRO-3 gives None off the main process
        inner = self.accelerator.unwrap_model(model)
        if hasattr(inner, "pretrained_model") and any(k.startswith("pretrained_model.") for k in state):
            # ZeRO-3 names parameters by module path; a value-head model's state_dict() drops the prefix
            state = {k.removeprefix("pretrained_model."): v for k, v in state.items()}
        return self.alias_tied(state, inner)

    @staticmethod
    def register_generate(model: torch.nn.Module) -> None:
        """Let ``model.generate`` run under FSDP2, as ``forward`` does.

        ``generate`` calls the wrapped model's inner modules, never the root's forward, so FSDP2
        neither gathers the root's own weights nor finds its root ("FSDP requires a single root
        module"); registered as a forward method, it gets the root's pre/post-forward hooks.
        A no-op for a model that is not FSDP2-sharded.
        """
        from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

        if isinstance(model, FSDPModule) and hasattr(model, "generate"):
            register_fsdp_forward_method(model, "generate")

    @staticmethod
    def alias_tied(state: dict, module: torch.nn.Module) -> dict:
        """Make the entries of tied parameters (embeddings = LM head) one tensor again, in place.

        A gather copies each name apart, and save_pretrained drops a duplicate only when the
        tensors are shared, so it would write the embeddings twice. ``state``'s names are
        ``module``'s (pass the submodule whose names they are, e.g. a value-head model's
        ``pretrained_model``)."""
        first: dict[int, str] = {}
        for name, param in module.named_parameters(remove_duplicate=False):
            kept = first.setdefault(id(param), name)
            if kept != name and kept in state and name in state:
                state[name] = state[kept]
        return state

    @property
    def pending(self) -> bool:
        """True while gradients of some micro-batches wait for the optimiser step."""
        return self._micro > 0

    def autocast(self):
        """Mixed-precision region for forward passes (weights and optimiser stay float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def deepspeed(self) -> bool:
        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    def backward(self, loss: torch.Tensor, last: bool = False) -> None:
        """Backward of ``loss / gradient_accumulation_steps`` (loss-scaled under fp16).

        ``last``: this micro-batch ends an accumulation window early (the end of an epoch).
        DeepSpeed divides by the accumulation steps and steps its engine inside backward, at
        the boundary we tell it here; the later ``optimizer_step`` then only moves the schedule.
        """
        if self.deepspeed:
            boundary = last or (self._micro + 1) % self.gradient_accumulation_steps == 0
            self.accelerator.gradient_state._set_sync_gradients(boundary)
            self.accelerator.backward(loss)
        else:
            loss = loss / self.gradient_accumulation_steps
            self.accelerator.backward(self.scaler.scale(loss) if self.scaler is not None else loss)
        self._micro += 1

    def optimizer_step(self, optimizer, params, scheduler=None, force: bool = False,
                       skip_backward: bool = False) -> torch.Tensor | None:
        """Clip and step once every ``gradient_accumulation_steps`` micro-batches (or when forced).

        ``skip_backward`` counts a micro-batch whose backward was deliberately skipped, so
        accumulation stays aligned. Parameters without a gradient are left alone by the
        optimiser (no momentum update). Returns the pre-clip gradient norm when clipping
        is on, else None. ``optimizer``: one, or a tuple of optimisers stepped together (one per
        model where models are prepared apart); ``params`` are all of theirs, clipped as one.
        """
        optimizers = optimizer if isinstance(optimizer, tuple) else (optimizer,)
        self._micro += int(skip_backward)
        if self._micro % self.gradient_accumulation_steps and not force:
            return None
        if self.deepspeed:  # the engine clipped, stepped and zeroed inside backward (see there)
            if scheduler is not None:
                scheduler.step()
            self._micro = 0
            norm = self.accelerator.deepspeed_engine_wrapped.get_global_grad_norm()
            return torch.tensor(float(norm)) if norm is not None and self.max_grad_norm is not None else None
        if all(p.grad is None for p in params):  # every micro-batch was skipped: nothing to apply
            self._micro = 0
            return None
        grad_norm = None
        if self.scaler is not None:
            for opt in optimizers:
                self.scaler.unscale_(opt)
        if self.max_grad_norm is not None:
            grad_norm = self.accelerator.clip_grad_norm_(params, self.max_grad_norm)
        for opt in optimizers:
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()
        for opt in optimizers:
            opt.zero_grad()  # no argument: keeps a user's patched zero_grad (torch's default frees grads)
        if scheduler is not None:
            scheduler.step()
        self._micro = 0
        return grad_norm

    @property
    def metrics_path(self) -> Path | None:
        """``metrics.jsonl`` of this run (None when JSONL logging is off)."""
        return self.logging_dir / "metrics.jsonl" if self.logging_dir is not None else None

    def state_dict(self) -> dict:
        """Accumulation position and fp16 loss-scaler state, for checkpoints."""
        return {"micro": self._micro, "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self._micro = int(state.get("micro", 0))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def log(self, metrics: dict, step: int) -> None:
        """Scalars to the trackers and, on the main process, one JSON line per call."""
        self.log_rows([(step, metrics)])

    def log_rows(self, rows: list[tuple[int, dict]]) -> None:
        """``log`` of several ``(step, metrics)`` rows, appended to ``metrics.jsonl`` in one write (a run that
        logs many small rows, such as one per finished episode)."""
        lines = []
        for step, metrics in rows:
            scalars = {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
            if self.accelerator.trackers:
                tracked = scalars if self.tracker_name is None else \
                    {name: v for name, v in ((self.tracker_name(k), v) for k, v in scalars.items()) if name is not None}
                self.accelerator.log(tracked, step=step)
            lines.append(json.dumps({self.step_key: step, **scalars}) + "\n")
        if lines and self.logging_dir is not None and self.is_main_process:
            self.logging_dir.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a") as fh:
                fh.write("".join(lines))

    def end(self) -> None:
        if self.accelerator.trackers:
            self.accelerator.end_training()

    # ------------------------------------------------------------------ a run
    def prepare(self, model, optimizer):
        """``accelerator.prepare`` of the model and optimiser, and the parameters the optimiser steps as
        ``prepare`` left them (FSDP2 swaps in sharded ones: a list taken before goes stale)."""
        model, optimizer = self.accelerator.prepare(model, optimizer)
        return model, optimizer, self.trainable_params(model, optimizer)

    def progress(self, total: int, initial: int, desc: str, disable: bool = False, unit: str = "it"):
        """The run's progress bar (main process only), in optimiser steps or in ``unit``s of the caller's own."""
        return tqdm(total=total, initial=initial, desc=desc, disable=disable or not self.is_main_process,
                    dynamic_ncols=True, unit=unit)

    def record(self, row: dict, step: int, history: list, console: bool = True) -> dict:
        """Log one metrics row at ``step``: trackers and ``metrics.jsonl``, the run's ``history``, and one
        console line on the main process (``console=False``: the caller prints its own)."""
        self.log(row, step=step)
        history.append({self.step_key: step, **row})
        if console and self.is_main_process:
            write_console(console_line(row, step))
        return row

    def record_rows(self, rows: list[tuple[int, dict]], history: list) -> None:
        """``record`` of several ``(step, row)`` rows at once (``log_rows``), without console lines."""
        self.log_rows(rows)
        history.extend({self.step_key: step, **row} for step, row in rows)

    def start(self, output_dir, resume, load: Callable[[Path], None], step: Callable[[], int],
              logs: tuple = ()) -> None:
        """Begin (or continue) a run in ``output_dir``: remove what a killed save left, then either
        ``load(checkpoint folder)`` for ``resume`` (a folder or ``'latest'``), or start ``metrics.jsonl``
        over from ``step()`` (rows of a killed run that started over are dropped). ``logs``: other
        per-step JSONL files (``completions.jsonl``) cut back to ``step()`` either way."""
        if self.is_main_process:
            checkpoint.clean_stale(output_dir)
        self.accelerator.wait_for_everyone()
        if resume:
            load(checkpoint.resolve(output_dir, resume))
        elif self.is_main_process:
            checkpoint.truncate_metrics(self.metrics_path, None, step(), key=self.step_key)
        if self.is_main_process:
            for path in logs:
                checkpoint.truncate_metrics(path, None, step())

    def model_writer(self, model, write: Callable | None = None, tokenizer=None) -> Callable[[Path], None]:
        """``writer(path)`` of ``model``'s files, for the main process. Call it on every rank: under FSDP2
        and ZeRO-3 it gathers the full weights first (a collective).

        ``write(unwrapped_model, path, state_dict=...)``: a custom writer (it gets ``state_dict`` only
        when the weights were gathered); default ``save_pretrained`` plus ``tokenizer``'s files.
        """
        state = self.full_state_dict(model)
        inner = self.accelerator.unwrap_model(model)

        def default(m, path, state_dict=None):
            m.save_pretrained(path, state_dict=state_dict)
            if tokenizer is not None:
                tokenizer.save_pretrained(path)

        write = write or default
        if state is None:
            return lambda path: write(inner, Path(path))
        return lambda path: write(inner, Path(path), state_dict=state)

    def save_model(self, path, writer: Callable[[Path], None], atomic: bool = False) -> None:
        """The final model to ``path`` with ``writer`` (from ``model_writer``, made on every rank), from the
        main process. ``atomic``: into a temporary folder renamed into place, for a folder of its own (never
        ``output_dir`` itself, which holds the checkpoints)."""
        self.accelerator.wait_for_everyone()
        if self.is_main_process:
            if atomic:
                atomic_save_dir(path, writer)
            else:
                writer(Path(path))
        self.accelerator.wait_for_everyone()

    def save_checkpoint(self, output_dir, step: int, *, section: str, method_state: dict, optimizer, scheduler,
                        writer: Callable[[Path], None], summary: dict, limit: int | None = None,
                        rng: dict | None = None, metrics_offset=None, mechanics_state: dict | None = None,
                        extra: dict | None = None) -> Path:
        """``output_dir/checkpoint-<step>`` in the one layout of ``checkpoint``, written atomically; every
        rank calls (each rank's RNG is gathered).

        ``section``/``method_state``: the method's own state under its name (``loop``, ``online``, ``ppo``);
        ``extra``: more entries of the method beside it (the loop's log window and data settings).
        ``writer``: from ``model_writer`` (the weights). ``summary``: ``trainer_state.json``'s fields.
        ``rng``, ``metrics_offset``, ``mechanics_state``: those of a past moment of this same step (the
        boundary a Ctrl-C saves), else now. A checkpoint is taken at an optimiser-step boundary, so no
        micro-batch is pending in it.
        """
        self.accelerator.wait_for_everyone()
        rngs = checkpoint.rng_states_of_all_ranks(self.accelerator, rng)
        if metrics_offset is None:
            metrics_offset = checkpoint.metrics_size(self.metrics_path)
        if self.is_main_process:
            state = {section: method_state, "rng": rngs, "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict() if scheduler is not None else None,
                     "mechanics": {**(mechanics_state or self.state_dict()), "micro": 0},
                     "metrics_offset": metrics_offset, **(extra or {})}
            checkpoint.save(output_dir, step, writer, state, summary, limit)
        self.accelerator.wait_for_everyone()
        return Path(output_dir) / f"checkpoint-{step}"

    def read_checkpoint(self, path, trainer: str, section: str) -> dict:
        """``trainer_state.pt`` of ``path``, refused with the writer's name when it holds no ``section``
        (another trainer wrote it)."""
        path = Path(path)
        state = checkpoint.load(path, trainer)
        if section not in state:
            try:
                writer = json.loads((path / checkpoint.SUMMARY_FILE).read_text()).get("trainer", "another trainer")
            except (OSError, ValueError):
                writer = "another trainer"
            raise ValueError(f"{path} is not a {trainer} checkpoint (it was written by {writer}); resume it with "
                             f"the trainer that wrote it")
        return state

    def restore(self, path, state: dict, *, load_weights: Callable[[Path], None], optimizer, scheduler,
                restore_method: Callable[[dict], None], step: Callable[[], int]) -> None:
        """Put a checkpoint's state back in the order that keeps a resume exact: weights (``load_weights``),
        optimiser, scheduler, accumulation state, the method's own (``restore_method(state)``), the metrics
        file cut back to the checkpoint, and every RNG last (nothing above may draw from it)."""
        load_weights(Path(path))
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.load_state_dict(state["mechanics"])
        restore_method(state)
        if self.is_main_process:
            checkpoint.truncate_metrics(self.metrics_path, state["metrics_offset"], step(), key=self.step_key)
        checkpoint.set_rank_rng_state(self.accelerator, state["rng"])

    def finish(self, output_dir, figure=None, title: str | None = None) -> None:
        """End a run: close the trackers and draw ``learning_curve.png`` from ``metrics.jsonl`` (the whole
        run, a resumed one too) into ``output_dir`` (or ``figure``)."""
        self.end()
        path = self.metrics_path
        if self.is_main_process and path is not None and path.exists():
            plot.save_learning_curve(path.parent, figure, title)


def param_groups(model, weight_decay: float) -> list[dict]:
    """The trainable parameters of ``model`` in two optimiser groups: weight decay on matrices, none on
    biases and norms (1-D parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def schedule(config, optimizer, total_steps: int):
    """``config.lr_scheduler_type`` over ``total_steps`` optimiser steps, with ``warmup_steps`` (or
    ``warmup_ratio`` of the steps) of warm-up."""
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total_steps)
    return get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                         num_training_steps=total_steps)


def shards_parameters() -> bool:
    """True when this process was launched to shard parameters: FSDP, or DeepSpeed ZeRO-3.

    Known before any ``Accelerator`` exists (from ``accelerate launch``'s environment), so a
    trainer can turn off a forward that hooks cannot follow: the prompt-once KV-cache forward
    feeds one forward's keys/values into a second one, and the gradient reaching the first
    forward's weights arrives after FSDP has freed their gathered copy.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return True
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return False
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if path and os.path.exists(path):
        stage = json.loads(Path(path).read_text()).get("zero_optimization", {}).get("stage", stage)
    return str(stage) == "3"


def _fill_deepspeed_config(accelerator: Accelerator, micro_batch_size, gradient_accumulation_steps: int,
                           max_grad_norm) -> None:
    """Fill the DeepSpeed config's ``"auto"`` fields from the trainer's own settings, and refuse
    a config file that contradicts them (Accelerate would silently keep the file's values, and
    fills an "auto" clipping with 1.0 whatever the trainer says)."""
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    wanted = {"gradient_accumulation_steps": gradient_accumulation_steps,
              "gradient_clipping": float(max_grad_norm) if max_grad_norm else 0.0}
    if micro_batch_size is not None:
        wanted["train_micro_batch_size_per_gpu"] = micro_batch_size
        wanted["train_batch_size"] = micro_batch_size * gradient_accumulation_steps * accelerator.num_processes
    source = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or "the DeepSpeed config"
    for key, value in wanted.items():
        have = ds.get(key, "auto")
        if have == "auto":
            ds[key] = value
        elif float(have) != float(value):
            raise ValueError(f"{source}: {key} is {have} but the trainer's config gives {value}; "
                             f'set it to "auto" in the DeepSpeed config (rlhfkit fills it) or change the trainer\'s')
    zero = ds.get("zero_optimization", {})
    if zero.get("stage") == 3 and zero.get("stage3_gather_16bit_weights_on_model_save", "auto") == "auto":
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # save_pretrained needs the whole weights


def _fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Honour ``accelerate launch --use_fsdp --fsdp_version 2`` on a machine without GPUs.

    Accelerate 1.x selects FSDP only for GPU-like devices: with ``cpu=True`` it reads the
    FSDP environment, builds the plugin, then silently runs plain data parallel. Torch's
    ``fully_shard`` itself works on a CPU mesh over gloo, so we switch the shared state to
    FSDP and the same sharded code path runs (and is tested) on CPU. FSDP1 is refused.
    """
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    state = accelerator.state
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if not wants_fsdp or state.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError("FSDP on CPU needs FSDP2: launch with `--fsdp_version 2` (or `fsdp_version: 2` in the "
                         "accelerate config); FSDP1 needs GPUs")
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    # What Accelerate does itself on GPUs: the process-wide state must agree, or the next
    # AcceleratorState() (inside prepare) copies MULTI_CPU back.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def tracker_init_kwargs(tracker_config: dict | None, tracker_kwargs: dict | None = None) -> dict:
    """Accelerate's ``init_kwargs``: ``tracker_kwargs``, with the config's ``run_name`` as the W&B and Trackio
    run name (``wandb.init(name=...)``, ``trackio.init(name=...)``) unless those already name one."""
    kwargs = {tracker: dict(values) for tracker, values in (tracker_kwargs or {}).items()}
    run_name = (tracker_config or {}).get("run_name")
    if run_name:
        for tracker in ("wandb", "trackio"):
            kwargs.setdefault(tracker, {}).setdefault("name", run_name)
    return kwargs


def _scalar(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(()).item()
    if isinstance(value, (bool, int, float, np.floating, np.integer)):
        value = float(value)
        return value if math.isfinite(value) else None
    return None


def _jsonable(config: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in config.items()}
