"""vLLM as an optional rollout engine for PPO, GRPO and RLOO: colocated, weights synced from the trainer.

UNTESTED ON HARDWARE. rlhfkit's development machine has no GPU and vLLM cannot be installed
there; this module's glue is unit-tested against a fake engine object
(``tests/rollout/test_vllm.py``) that mimics the vLLM surfaces used below. Run
``benchmarks/gpu_check.sh`` on a GPU machine with vLLM installed before relying on it.

The interface does not know PPOConfig:

    engine = VLLMRollout.from_pretrained("path/or/hub-id", gpu_memory_utilization=0.3)
    out = engine.generate(prompt_ids, SamplingSettings(max_new_tokens=32, temperature=1.0))
    out.response_ids   # list of 1-D LongTensors (cut after the first stop token, which is kept)
    out.logprobs       # list of 1-D float32 tensors: the engine's log-prob of each sampled token
    ...one trainer update...
    engine.sync_weights(policy)   # every update; raises TimeoutError after sync_timeout_s

``PPOTrainer(..., rollout_engine=engine)`` and ``GRPOTrainer``/``RLOOTrainer`` (``use_vllm=True``
or ``rollout_engine=engine``) drive it; ``rlhfkit ppo|grpo|rloo use_vllm=true`` from the CLI.

Weight sync. A full-weight policy is pushed with vLLM's native in-place loader: the
``load_weights(iterable of (name, tensor))`` of the model inside the engine, reached through
``LLM.apply_model`` (vLLM >= 0.9, V1 engine) or the V0 driver worker's ``model_runner.model``
(what TRL's colocated mode used), then the prefix cache is reset (cached keys/values belong to
the old weights). A PEFT/LoRA policy ships only its adapter: it is saved to a fresh folder and
the next ``generate`` passes a new ``LoRARequest`` (vLLM loads adapters by path and caches them
by id), so the base weights in the engine never change. Every sync runs in a worker thread and
is abandoned with a ``TimeoutError`` after ``sync_timeout_s``: a wedged engine must not hang a
training run silently.

The engine's log-probs are its own numerics (bf16 kernels, its own sampler's processing), so
PPO keeps recomputing the old policy's log-probs in the trainer; these are for diagnostics
(``logprob_gap``: trainer minus engine, the rollout/trainer mismatch of Yao et al. 2025).
"""

from __future__ import annotations

import itertools
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

INSTALL_HINT = ("vLLM is not installed: `pip install vllm` on a machine with a CUDA GPU (it is not a dependency "
                "of rlhfkit). Without it, PPOTrainer.generate and GRPO/RLOO (use_vllm=false) use Hugging Face "
                "generate, which needs nothing else.")


def require_vllm():
    """Import vllm or raise ImportError with what to do."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return vllm


@dataclass
class SamplingSettings:
    """What to sample, in the terms PPO users know; mapped to vLLM's ``SamplingParams``."""
    max_new_tokens: int = 32
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                    # 0 or None: off (vLLM's -1)
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    repetition_penalty: float = 1.0   # 1.0: off
    min_p: float = 0.0                # 0.0: off

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingSettings.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"SamplingSettings.min_new_tokens must be in 0..max_new_tokens ({self.max_new_tokens}), "
                             f"got {self.min_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"SamplingSettings.temperature must be > 0 (PPO needs sampling), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingSettings.top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"SamplingSettings.repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"SamplingSettings.min_p must be in [0, 1], got {self.min_p}")

    @classmethod
    def from_generation_kwargs(cls, kwargs: dict, eos_token_id=None) -> "SamplingSettings":
        """The subset of Hugging Face ``generate`` kwargs PPO scripts pass; anything else is refused by name."""
        known = {"max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k", "do_sample", "pad_token_id",
                 "eos_token_id", "repetition_penalty", "min_p"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"the vLLM rollout engine does not take generation kwargs {unknown}; supported: "
                             f"{sorted(known)} (or use Hugging Face generate: PPOTrainer without rollout_engine)")
        if kwargs.get("do_sample") is False:
            raise ValueError("do_sample=False (greedy) is not a PPO rollout; the vLLM engine always samples")
        eos = kwargs.get("eos_token_id", eos_token_id)
        stops = tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None)
        return cls(max_new_tokens=int(kwargs.get("max_new_tokens", 32)),
                   min_new_tokens=int(kwargs.get("min_new_tokens") or 0),
                   temperature=float(kwargs.get("temperature", 1.0)), top_p=float(kwargs.get("top_p", 1.0)),
                   top_k=int(kwargs.get("top_k") or 0), stop_token_ids=stops,
                   repetition_penalty=float(kwargs.get("repetition_penalty") or 1.0),
                   min_p=float(kwargs.get("min_p") or 0.0))

    def to_vllm(self, sampling_params_cls) -> Any:
        """vLLM ``SamplingParams`` (one sample per prompt, the sampled token's log-prob returned)."""
        return sampling_params_cls(n=1, max_tokens=self.max_new_tokens, min_tokens=self.min_new_tokens,
                                   temperature=self.temperature, top_p=self.top_p,
                                   top_k=self.top_k if self.top_k else -1, seed=self.seed,
                                   stop_token_ids=list(self.stop_token_ids), logprobs=0, detokenize=False,
                                   repetition_penalty=self.repetition_penalty, min_p=self.min_p)


@dataclass
class EngineRollout:
    response_ids: list[torch.Tensor]  # each (R_i,) int64
    logprobs: list[torch.Tensor]      # each (R_i,) float32, the engine's log p(sampled token)


def _sampled_logprobs(token_ids, logprobs) -> torch.Tensor:
    """vLLM reports, per position, a dict {token_id: Logprob(logprob=...)}; keep the sampled token's."""
    if logprobs is None:
        return torch.full((len(token_ids),), float("nan"))
    vals = []
    for tok, entry in zip(token_ids, logprobs):
        lp = entry[tok] if isinstance(entry, dict) else entry
        vals.append(float(getattr(lp, "logprob", lp)))
    return torch.tensor(vals, dtype=torch.float32)


def run_with_timeout(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """``fn()`` in a worker thread; TimeoutError naming ``what`` if it has not returned after ``timeout_s``."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            result["error"] = err

    worker = threading.Thread(target=target, name=f"rlhfkit-{what}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(f"{what} did not finish within {timeout_s:g} s (sync_timeout_s); the vLLM engine may be "
                           "wedged or out of GPU memory. Raise sync_timeout_s for very large models.")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def policy_state(model) -> tuple[bool, Iterable[tuple[str, torch.Tensor]] | None]:
    """(is_lora, weights): a PEFT policy ships its adapter instead; else the inner causal LM's weights
    under Transformers checkpoint names (a value head's ``v_head.*`` is not part of the LM)."""
    inner = getattr(model, "pretrained_model", model)
    if hasattr(inner, "peft_config"):
        return True, None
    return False, ((name, t.detach()) for name, t in inner.state_dict().items())


class VLLMRollout:
    """A colocated vLLM engine behind ``generate(prompt_ids, settings)`` and ``sync_weights(model)``.

    ``engine`` is a ``vllm.LLM`` (or, in tests, anything with its ``generate`` surface);
    ``sampling_params_cls`` / ``lora_request_cls`` default to vLLM's classes.
    """

    def __init__(self, engine, *, sync_timeout_s: float = 300.0, sampling_params_cls=None, lora_request_cls=None):
        if sync_timeout_s <= 0:
            raise ValueError(f"sync_timeout_s must be > 0, got {sync_timeout_s}")
        self.engine = engine
        self.sync_timeout_s = float(sync_timeout_s)
        if sampling_params_cls is None or lora_request_cls is None:
            vllm = require_vllm()
            sampling_params_cls = sampling_params_cls or vllm.SamplingParams
            if lora_request_cls is None:
                from vllm.lora.request import LoRARequest
                lora_request_cls = LoRARequest
        self.sampling_params_cls = sampling_params_cls
        self.lora_request_cls = lora_request_cls
        self.lora_request = None
        self._lora_ids = itertools.count(1)
        self._lora_dir = None
        self.syncs = 0

    @classmethod
    def from_pretrained(cls, model_path: str, *, gpu_memory_utilization: float = 0.3, dtype: str = "bfloat16",
                        enable_lora: bool = False, max_lora_rank: int = 64, sync_timeout_s: float = 300.0,
                        **llm_kwargs) -> "VLLMRollout":
        """A ``vllm.LLM`` on the same GPU as the trainer (``gpu_memory_utilization`` leaves it the rest)."""
        vllm = require_vllm()
        if enable_lora:
            llm_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
        engine = vllm.LLM(model=str(model_path), gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                          **llm_kwargs)
        return cls(engine, sync_timeout_s=sync_timeout_s)

    def generate(self, prompt_ids, settings: SamplingSettings) -> EngineRollout:
        """One sampled response per prompt: token ids (the stop token kept) and their engine log-probs."""
        prompts = [{"prompt_token_ids": [int(t) for t in (p.tolist() if torch.is_tensor(p) else p)]}
                   for p in prompt_ids]
        if not prompts or any(not p["prompt_token_ids"] for p in prompts):
            raise ValueError("generate() needs at least one prompt, each with at least one token")
        kwargs = {"lora_request": self.lora_request} if self.lora_request is not None else {}
        outputs = self.engine.generate(prompts, settings.to_vllm(self.sampling_params_cls), use_tqdm=False, **kwargs)
        responses, logprobs = [], []
        for out in outputs:
            sample = out.outputs[0]
            ids = list(sample.token_ids)
            responses.append(torch.tensor(ids, dtype=torch.long))
            logprobs.append(_sampled_logprobs(ids, sample.logprobs))
        return EngineRollout(responses, logprobs)

    # ------------------------------------------------------------------ weight sync
    def sync_weights(self, model) -> None:
        """Push ``model``'s current weights (or its LoRA adapter) into the engine, within ``sync_timeout_s``."""
        is_lora, weights = policy_state(model)
        if is_lora:
            run_with_timeout(lambda: self._sync_adapter(model), self.sync_timeout_s, "vLLM LoRA adapter sync")
        else:
            run_with_timeout(lambda: self._load_full(weights), self.sync_timeout_s, "vLLM weight sync")
        self.syncs += 1

    def _sync_adapter(self, model) -> None:
        inner = getattr(model, "pretrained_model", model)
        if self._lora_dir is not None:
            self._lora_dir.cleanup()
        self._lora_dir = tempfile.TemporaryDirectory(prefix="rlhfkit-vllm-lora-")
        inner.save_pretrained(self._lora_dir.name)
        n = next(self._lora_ids)  # a new id: vLLM caches adapters by id, a reused id would serve stale weights
        self.lora_request = self.lora_request_cls(f"policy-{n}", n, self._lora_dir.name)

    def _load_full(self, weights) -> None:
        weights = list(weights)
        engine = self.engine
        if hasattr(engine, "apply_model"):  # vLLM V1: runs the function on the model in every worker
            engine.apply_model(lambda m: m.load_weights(weights))
        else:
            runner = _v0_model(engine)
            if runner is None:
                raise RuntimeError("cannot find the model inside this vLLM engine to load weights into (neither "
                                   "LLM.apply_model nor llm_engine.model_executor.driver_worker.model_runner.model); "
                                   "this vLLM version is not supported for weight sync")
            runner.load_weights(weights)
        if hasattr(engine, "reset_prefix_cache"):  # cached keys/values were computed by the old weights
            engine.reset_prefix_cache()


def _v0_model(engine):
    worker = getattr(getattr(getattr(engine, "llm_engine", None), "model_executor", None), "driver_worker", None)
    for path in (("model_runner", "model"), ("worker", "model_runner", "model")):
        obj = worker
        for name in path:
            obj = getattr(obj, name, None)
        if obj is not None and hasattr(obj, "load_weights"):
            return obj
    return None

