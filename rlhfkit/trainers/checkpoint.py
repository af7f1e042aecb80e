"""One checkpoint layout and one resume path for every trainer (SFT, reward, DPO, KTO, GRPO, RLOO, PPO).

``output_dir/checkpoint-<step>/`` holds:

- the model files (``save_pretrained`` output; PPO adds ``value_head.safetensors`` and ``critic/``),
- ``trainer_state.pt``: everything else a run needs to continue exactly: optimiser and
  scheduler state, every RNG state (Python, NumPy, torch CPU, each CUDA device) as it was
  at that step, the position in the data, and the method's own state (PPO: KL controller,
  running reward moments, minibatch shuffler, prompt sampler, ptx stream),
- ``trainer_state.json``: a readable summary (step, trainer, config), written last.

Writes are atomic (``atomic_save_dir``): a ``kill -9`` at any moment leaves either the
complete checkpoint or none, plus at most a ``.tmp-checkpoint-*`` folder that
``clean_stale`` removes at the next start. ``metrics_offset`` records the size of
``metrics.jsonl`` at the checkpoint, so a resume drops exactly the rows logged after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from safetensors.torch import load_file

STATE_FILE = "trainer_state.pt"
SUMMARY_FILE = "trainer_state.json"
FORMAT_VERSION = 1
_NAME = re.compile(r"checkpoint-(\d+)")
_OURS = re.compile(r"checkpoint-\d+|final")  # folders written through atomic_save_dir here


def atomic_save_dir(target: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_dir)`` then move the folder to ``target`` in one rename.

    A crash or Ctrl-C during ``write`` leaves the previous ``target`` untouched and only a
    stray ``.tmp-*`` folder beside it; readers never see a half-written checkpoint.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        write(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load a ``save_pretrained`` folder (one file or shards) into ``model`` in place."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    state = {}
    for name in files:
        state.update(load_file(folder / name))
    result = model.load_state_dict(state, strict=False)
    tied = {k for k in result.missing_keys if k.endswith("lm_head.weight") or "embed" in k}
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise ValueError(f"checkpoint {folder} does not match the model: missing {result.missing_keys}, "
                         f"unexpected {result.unexpected_keys}")


def rng_state() -> dict:
    """Every global RNG state: Python, NumPy, torch CPU and (when present) each CUDA device."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def rng_preserved():
    """Run a block (an evaluation) without moving any global RNG, even when it ends in an exception.

    Training then draws the same dropout masks and samples whether or not, and how often, it is
    evaluated, and a Ctrl-C inside an evaluation leaves the RNG where training had it.
    """
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


@contextlib.contextmanager
def sigint_deferred(notice: str | None = None):
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block has finished.

    For statements that must happen together (an optimiser step's counter and its log row; a
    whole PPO update), so that an interrupt never lands between them. ``notice`` is printed
    when a Ctrl-C is held; a second Ctrl-C stops at once. Only on the main thread and only while
    Python's default handler is installed; anywhere else the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught = []

    def hold(_signum, _frame):
        if caught:  # the second Ctrl-C: the user does not want to wait
            raise KeyboardInterrupt
        caught.append(True)
        if notice:
            print(notice, file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def rng_states_of_all_ranks(accelerator, state: dict | None = None) -> list[dict]:
    """Every process's ``rng_state()`` (or ``state``), in rank order; call on all processes.

    Ranks draw different amounts (other batch shapes, other samples), so each gets its own back.
    """
    state = state if state is not None else rng_state()
    if accelerator.num_processes == 1:
        return [state]
    from accelerate.utils import gather_object

    return gather_object([state])


def set_rank_rng_state(accelerator, states) -> None:
    """Restore this process's entry of ``rng_states_of_all_ranks`` (a dict alone: every rank)."""
    states = [states] if isinstance(states, dict) else states
    if len(states) != accelerator.num_processes:
        raise ValueError(f"the checkpoint holds RNG states of {len(states)} processes, this run has "
                         f"{accelerator.num_processes}; resume with the same number of processes")
    set_rng_state(states[accelerator.process_index])


def checkpoints(output_dir) -> list[Path]:
    """Complete ``checkpoint-<step>`` folders in ``output_dir``, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.fullmatch(p.name) and (p / SUMMARY_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve(output_dir, resume) -> Path:
    """``'latest'`` (or True) -> the newest checkpoint in ``output_dir``; a path -> itself."""
    if str(resume) == "latest" or resume is True:
        found = checkpoints(output_dir)
        if not found:
            raise ValueError(f"resume_from_checkpoint='latest' but {output_dir} has no complete checkpoint-<step> "
                             f"folder; drop --resume_from_checkpoint to start from scratch")
        return found[-1]
    path = Path(resume)
    if not path.is_dir():
        raise ValueError(f"resume_from_checkpoint={str(resume)!r} is not a folder; pass a checkpoint-<step> folder "
                         f"or 'latest'")
    return path


def clean_stale(output_dir) -> list[Path]:
    """Remove what an interrupted save left in ``output_dir``; returns the removed paths.

    ``.tmp-checkpoint-*`` (and ``.tmp-final-*``, PPO's final model) is a write that never
    finished. ``.old-<name>-<pid>`` is a complete folder being replaced by a re-save of the
    same name: it is moved back when the replacement never arrived, else deleted. Call on
    the main process only.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob(".old-*")):
        name = re.sub(r"-\d+$", "", path.name[len(".old-"):])
        if not _OURS.fullmatch(name) or not path.is_dir():
            continue
        if not (folder / name).exists():
            os.replace(path, folder / name)
        else:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for path in sorted(folder.glob(".tmp-*")):
        if path.is_dir() and re.fullmatch(rf"\.tmp-({_OURS.pattern})-.+", path.name):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def rotate(output_dir, limit: int | None) -> None:
    """Keep the newest ``limit`` checkpoints (all when ``limit`` is falsy)."""
    if limit:
        for old in checkpoints(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)


def metrics_size(path) -> int | None:
    """Size in bytes of ``metrics.jsonl`` now (None when there is none)."""
    return os.path.getsize(path) if path is not None and os.path.exists(path) else None


def truncate_metrics(path, offset: int | None, step: int, key: str = "step") -> None:
    """Drop the rows a killed run logged after the checkpoint, so each step appears once.

    ``offset`` (the file size at the checkpoint) cuts exactly; rows whose step (``row[key]``) is above
    the checkpoint's, or missing, are dropped in any case (a metrics file from elsewhere, or no offset).
    """
    if path is None or not os.path.exists(path):
        return
    path = Path(path)
    if offset is not None and os.path.getsize(path) >= offset:
        os.truncate(path, offset)
    lines = path.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if _row_step(line, key) is not None and _row_step(line, key) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)


def _row_step(line: bytes, key: str = "step") -> int | None:
    try:
        return int(json.loads(line)[key])
    except (ValueError, KeyError, TypeError):  # a half-written last line of a killed run
        return None


def save(output_dir, step: int, write_model, state: dict, summary: dict, limit: int | None = None) -> Path:
    """Write ``checkpoint-<step>`` atomically: ``write_model(folder)``, then the state, then the summary."""
    path = Path(output_dir) / f"checkpoint-{step}"

    def write(tmp: Path) -> None:
        write_model(tmp)
        _write_state(tmp, {"format": FORMAT_VERSION, "step": step, **state})
        (tmp / SUMMARY_FILE).write_text(json.dumps({"step": step, **summary}, indent=2, default=str))

    atomic_save_dir(path, write)
    rotate(output_dir, limit)
    return path


def _write_state(folder: Path, state: dict) -> None:
    torch.save(state, folder / STATE_FILE)


ADAPTER_FILE = "adapter_model.safetensors"


def load_model_weights(model: torch.nn.Module, folder) -> None:
    """Put the weights a checkpoint folder holds into ``model`` in place, exactly.

    A PEFT (LoRA) model's ``save_pretrained`` writes only its adapter (``adapter_model.safetensors``,
    with any ``modules_to_save`` such as a reward head): those are loaded into the adapter; any
    other model loads its full ``save_pretrained`` files.
    """
    from ..models.reference import is_peft_model

    folder = Path(folder)
    if not is_peft_model(model):
        load_weights(model, folder)
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not (folder / ADAPTER_FILE).exists():
        raise ValueError(f"{folder} has no {ADAPTER_FILE}: it was not written by a LoRA run; resume with the "
                         f"same use_peft / peft_config setting as the run that wrote it")
    result = set_peft_model_state_dict(model, load_file(folder / ADAPTER_FILE))
    if result.unexpected_keys:
        raise ValueError(f"the adapter in {folder} does not match the model: unexpected {result.unexpected_keys}")


def load(path, what: str = "rlhfkit") -> dict:
    """The ``trainer_state.pt`` dict of a checkpoint folder, with a clear error when it is not one."""
    path = Path(path)
    if not (path / STATE_FILE).exists() or not (path / SUMMARY_FILE).exists():
        raise ValueError(f"{path} is not a {what} checkpoint (no {STATE_FILE} and {SUMMARY_FILE}); pass a "
                         f"checkpoint-<step> folder written by rlhfkit, or 'latest'")
    # weights_only=False: the NumPy and Python RNG states are not tensors. Load only your own checkpoints.
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path / STATE_FILE} has format {state.get('format')!r}; this rlhfkit reads format "
                         f"{FORMAT_VERSION}. Resume with the rlhfkit version that wrote it")
    return state
