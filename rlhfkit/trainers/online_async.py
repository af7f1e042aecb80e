"""Asynchronous generation for the online trainers: a producer thread samples while the trainer updates.

    producer = RolloutProducer(policy, generate, version=step, queue_size=1, timeout_s=600)
    producer.start()
    item = producer.get()                  # a finished rollout and the policy version it was sampled with
    ...one optimiser step on it...
    producer.publish(policy, step + 1)     # the snapshot takes these weights before its next rollout
    producer.close()

The producer owns a *snapshot*: a copy of the policy used only for sampling (eval mode, no
grad). ``generate(snapshot)`` (``online.OnlineRun._generate``) takes the next prompts, samples
and scores them and computes the snapshot's log-probs of the sampled tokens (the behaviour
policy); the producer stamps the result with the snapshot's version (the optimiser step its
weights come from) and puts it in a bounded queue. ``publish`` copies the trainer's trainable
weights into a staging buffer (a short copy under a lock, the trainer never waits for a
generation); the producer moves them into the snapshot between two rollouts, so one rollout
never mixes two versions. Three copies of the trainable weights exist (policy, staging,
snapshot); under LoRA only the adapter's are staged.

Torch releases the GIL inside its kernels, so a thread overlaps generation with training on
one device; with CUDA the producer samples on its own stream. A failure in the producer is
re-raised by ``get`` with the producer's traceback; a producer that yields nothing for
``timeout_s`` seconds is a ``TimeoutError`` naming it, never a hang.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
import traceback
import warnings
from typing import Callable

import torch

POLL_S = 0.05  # how often a waiting side looks at the stop flag and the producer's health


class RolloutProducer:
    """A background thread filling a queue of ``(version, generate(snapshot))`` items; see the module docstring."""

    def __init__(self, policy: torch.nn.Module, generate: Callable, *, version: int, queue_size: int,
                 timeout_s: float, name: str = "rollout producer"):
        self.generate, self.timeout_s, self.name = generate, timeout_s, name
        self.snapshot = copy.deepcopy(policy).eval().requires_grad_(False)
        self.version = version
        source = dict(policy.named_parameters())
        self._targets = {n: p for n, p in self.snapshot.named_parameters() if source[n].requires_grad}
        self._staging = {n: source[n].detach().clone() for n in self._targets}
        self._staged_version = version
        self._lock = threading.Lock()   # guards the staging buffer
        self._busy = threading.Lock()   # held while a rollout is generated (``paused`` waits on it)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._error_text = ""
        self._cuda = next(policy.parameters()).device.type == "cuda"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @torch.no_grad()
    def publish(self, policy: torch.nn.Module, version: int) -> None:
        """Stage ``policy``'s trainable weights as ``version``; the snapshot takes them before its next rollout."""
        params = dict(policy.named_parameters())
        with self._lock:
            for n, buf in self._staging.items():
                buf.copy_(params[n].detach())
            if self._cuda:  # the producer reads the buffer on its own stream
                torch.cuda.current_stream().synchronize()
            self._staged_version = version

    def get(self):
        """The next ``(version, item)``; re-raises a producer failure, ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            self._raise_failure()
            try:
                return self._queue.get(timeout=POLL_S)
            except queue.Empty:
                pass
            if not self._thread.is_alive():
                self._raise_failure()
                raise RuntimeError(f"the {self.name} thread has stopped; no more rollouts will come")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.name} thread produced no rollout in {self.timeout_s} s "
                                   f"(async_timeout_s): generation or a reward function hangs, or needs a larger "
                                   f"async_timeout_s")

    @contextlib.contextmanager
    def paused(self):
        """No rollout is generated inside (an evaluation samples with the same tokenizer and reward functions)."""
        with self._busy:
            yield

    def close(self, wait_s: float = 10.0) -> None:
        """Stop the thread (it finishes the rollout it is generating) and drop what is queued.

        A thread stuck for ``wait_s`` seconds (a hung reward function) is left behind as a daemon
        with a warning: the trainer's own error must reach the caller."""
        self._stop.set()
        deadline = time.monotonic() + wait_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._thread.join(POLL_S)
        if self._thread.is_alive():
            warnings.warn(f"the {self.name} thread did not stop within {wait_s} s; it is left running as a daemon "
                          f"thread and ends with the process", RuntimeWarning, stacklevel=2)

    # ------------------------------------------------------------------ the thread
    def _raise_failure(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the {self.name} thread failed; its traceback:\n{self._error_text}") from self._error

    def _run(self) -> None:
        try:
            stream = torch.cuda.Stream(next(self.snapshot.parameters()).device) if self._cuda else None
            with torch.no_grad(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
                while not self._stop.is_set():
                    with self._busy:
                        if self._stop.is_set():
                            return
                        self._take_staged(stream)
                        item = (self.version, self.generate(self.snapshot))
                        if stream is not None:  # the trainer reads the tensors on its stream
                            stream.synchronize()
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=POLL_S)
                            break
                        except queue.Full:
                            continue
        except BaseException as err:  # noqa: BLE001 - every failure is handed to the trainer by get()
            self._error_text = traceback.format_exc()
            self._error = err

    def _take_staged(self, stream) -> None:
        with self._lock:
            if self._staged_version == self.version:
                return
            for n, target in self._targets.items():
                target.copy_(self._staging[n])
            if stream is not None:  # the trainer may overwrite the buffer once the lock is released
                stream.synchronize()
            self.version = self._staged_version
