"""Checkpoints of the online loop (``online.OnlineRun``): written at generation-cycle boundaries.

A checkpoint holds the weights, optimiser, scheduler, prompt sampler, cycle count and every
RNG as they were at the end of a cycle (``boundary``), so a resume regenerates the next cycle
exactly as the uninterrupted run did; a cycle's completions are never saved. Ctrl-C
(``save_on_interrupt``) writes the boundary the weights belong to, if there is one. These are
plain functions of the run; ``OnlineRun`` binds the public ones as its methods.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import checkpoint, completion_log

REFERENCE_FILE = "reference_model.safetensors"  # with sync_ref_model: the reference moves, so it is saved


def save_model(run, path) -> None:
    """The policy (and tokenizer) to ``path``, from the main process."""
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        write_model(run, Path(path))


def write_model(run, path: Path, with_reference: bool = False) -> None:
    """The policy and tokenizer; in a checkpoint also a reference that ``sync_ref_model`` moves."""
    run.accelerator.unwrap_model(run.model).save_pretrained(path)
    run.tokenizer.save_pretrained(path)
    if with_reference and run.config.sync_ref_model:
        from safetensors.torch import save_model  # handles tied (shared) weights

        save_model(run.ref_model, str(Path(path) / REFERENCE_FILE))


def boundary(run) -> dict:
    """What a checkpoint records at the end of a generation cycle (the state ``rollout`` starts from)."""
    return {"global_step": run.global_step, "cycles": run.cycles, "sampler": run.sampler.state_dict(),
            "rng": checkpoint.rng_state(), "mechanics": run.mechanics.state_dict(),
            "metrics_offset": checkpoint.metrics_size(run.mechanics.metrics_path)}


def save_on_interrupt(run, last_boundary: dict) -> None:
    """Ctrl-C: checkpoint the cycle boundary the weights belong to, when there is one.

    Before a cycle's first optimiser step that is the last boundary; after its last one, the
    state now (an interrupted evaluation has put the RNG back, nothing else draws from it).
    """
    last = checkpoint.checkpoints(run.output_dir)
    point = boundary(run) if run.global_step != last_boundary["global_step"] and run._cycle_done else last_boundary
    if run.global_step != point["global_step"]:
        where = f"resume from {last[-1]}" if last else "no checkpoint was written yet"
        print(f"interrupted inside a generation cycle, {run.global_step - point['global_step']} optimiser "
              f"step(s) past its start: no exact checkpoint can be written here; {where}", file=sys.stderr)
        return
    if not last or last[-1].name != f"checkpoint-{run.global_step}":
        save_checkpoint(run, point)


def save_checkpoint(run, point: dict | None = None) -> Path:
    """``checkpoint-<step>`` (layout in ``checkpoint``) at a cycle boundary (``point``: a past one), atomically."""
    point = point or boundary(run)
    run.accelerator.wait_for_everyone()
    rngs = checkpoint.rng_states_of_all_ranks(run.accelerator, point["rng"])
    path = run.output_dir / f"checkpoint-{run.global_step}"
    if run.accelerator.is_main_process:
        state = {"online": {"global_step": run.global_step, "cycles": point["cycles"],
                            "sampler": point["sampler"], "prompt_count": len(run.prompts)},
                 "rng": rngs, "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "mechanics": {**point["mechanics"], "micro": 0},
                 "metrics_offset": point["metrics_offset"]}
        summary = {"trainer": run.method.name, "global_step": run.global_step, "config": run.config.to_dict()}
        checkpoint.save(run.output_dir, run.global_step, lambda path: write_model(run, path, with_reference=True),
                        state, summary, run.config.save_total_limit)
    run.accelerator.wait_for_everyone()
    return path


def load_checkpoint(run, path: Path) -> None:
    """Restore what ``save_checkpoint`` wrote into a freshly built run (same prompts and processes)."""
    path = Path(path)
    state = checkpoint.load(path, run.method.name)
    if "online" not in state:
        raise ValueError(f"{path} is not a {run.method.name} checkpoint (it was written by another trainer); "
                         f"resume it with the trainer that wrote it")
    online = state["online"]
    if online["prompt_count"] != len(run.prompts):
        raise ValueError(f"the checkpoint {path} was trained on {online['prompt_count']} prompts, this run has "
                         f"{len(run.prompts)}; use the same dataset to resume (or start a new output_dir)")
    checkpoint.load_model_weights(run.accelerator.unwrap_model(run.model), path)  # a LoRA policy: its adapter
    if run.config.sync_ref_model:  # the refreshed reference is part of the run's state
        if not (path / REFERENCE_FILE).exists():
            raise ValueError(f"{path} has no {REFERENCE_FILE}: it was written without sync_ref_model; resume with "
                             f"the same sync_ref_model setting")
        from safetensors.torch import load_model

        load_model(run.ref_model, str(path / REFERENCE_FILE))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.mechanics.load_state_dict(state["mechanics"])
    run.global_step, run.cycles = online["global_step"], online["cycles"]
    run.sampler.load_state_dict(online["sampler"])
    if run.accelerator.is_main_process:
        checkpoint.truncate_metrics(run.mechanics.metrics_path, state["metrics_offset"], run.global_step)
        checkpoint.truncate_metrics(run.output_dir / completion_log.FILE, None, run.global_step)
    checkpoint.set_rank_rng_state(run.accelerator, state["rng"])  # last: nothing above may draw from it
