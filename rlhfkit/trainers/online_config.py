"""Fields and set-up shared by the online trainers (GRPO, RLOO): TRL 1.x names and defaults.

``OnlineConfig`` holds what every critic-free method has (generation, the group of
``num_generations`` completions per prompt, clipping, the reward functions); ``GRPOConfig``
and ``RLOOConfig`` list these fields (dataclass field inheritance: data only) plus their own.
``prepare`` turns (model, reward_funcs, datasets, tokenizer, peft_config) as TRL takes them
into the pieces ``online.OnlineRun`` needs, checking everything before the model loads; its
``load_prompt_sets`` (the train and eval prompts) serves distillation's student sampling too.

Batch sizes count completions, as in TRL: one generation cycle samples
``per_device_train_batch_size * steps_per_generation`` completions per process, that is
``/ num_generations`` prompts, and trains on them in ``steps_per_generation`` chunks.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from .config import MAX_PACKED_LENGTH_HELP, PADDING_FREE_HELP, Checks, ConfigError, LoopConfig, check_padding_free, f
from .mechanics import set_seed
from ..rollout.prompts import load_prompts, split_prompts
from .setup import check_dataset_config, check_run, load_model_and_tokenizer


@dataclass
class OnlineConfig(LoopConfig):
    # LoopConfig fields the online trainers do not use: a value other than the default warns (config.warn_ignored)
    IGNORED = {"max_length": "the online trainers cut prompts at max_prompt_length and completions at "
                             "max_completion_length",
               "dataloader_num_workers": "prompts are sampled in the training process, without a DataLoader"}

    learning_rate: float = f(1e-6, "Peak learning rate (TRL's GRPO/RLOO default).")
    max_length: int = f(512, "Unused by the online trainers: see max_prompt_length and max_completion_length.")
    # ---- rewards ----
    reward_funcs: list[str] | None = f(None, "Reward functions: dotted paths 'package.module:function' (called as "
                                             "f(prompts, completions, **columns) -> list[float]) or reward-model "
                                             "folders; several are summed with reward_weights.")
    reward_weights: list[float] | None = f(None, "Weight of each reward function (default: 1.0 each); an "
                                                 "environment's own reward is added with weight 1.0.")
    # ---- multi-turn rollouts: tools and environments (docs/agents.md) ----
    tools: list[str] | None = f(None, "Tools the model may call, as dotted paths 'package.module:function' (type "
                                      "hints and a Google-style docstring each); a call's result is inserted and "
                                      "the model goes on. The trainer's tools= takes the functions themselves.")
    environment_factory: str | None = f(None, "Dotted path to an environment class (one instance per episode: "
                                              "reset(**columns), then step(action) or tool methods, optional "
                                              "get_reward()), or to a dict of them by name. The trainer's "
                                              "environment_factory= takes the class or dict itself.")
    environment_column: str = f("environment", "Dataset column naming each prompt's environment when "
                                               "environment_factory is a dict of them.")
    max_tool_calling_iterations: int | None = f(None, "Most inserted turns (tool results or environment "
                                                      "observations) per episode; none: no limit but "
                                                      "max_completion_length.")
    tool_timeout: float | None = f(30.0, "Seconds a tool call or environment reset/step/get_reward may take; one "
                                         "that runs longer ends its episode (none: no limit).")
    # ---- generation ----
    num_generations: int = f(8, "Completions sampled per prompt (the group); at least 2.")
    max_prompt_length: int | None = f(512, "Keep the last this many prompt tokens (none: the whole prompt).")
    max_completion_length: int = f(256, "Longest completion in tokens; longer ones are cut (truncated). In "
                                        "multi-turn episodes: the model's and the inserted tokens together.")
    temperature: float = f(1.0, "Sampling temperature; the training log-probs use the same temperature.")
    top_p: float = f(1.0, "Nucleus sampling: keep the smallest token set with this much probability (1.0: all).")
    top_k: int = f(0, "Keep the k most likely tokens when sampling (0: all).")
    min_p: float | None = f(None, "Drop tokens below min_p times the top token's probability (none: off).")
    repetition_penalty: float = f(1.0, "Penalty for tokens already in the prompt or completion (1.0: none).")
    generation_kwargs: dict | None = f(None, "More keyword arguments for model.generate (they override the ones above).")
    steps_per_generation: int | None = f(None, "Chunks of per_device_train_batch_size completions trained per "
                                               "generation (default: gradient_accumulation_steps: one generation "
                                               "per optimiser step).")
    generation_batch_size: int | None = f(None, "Completions per generation across processes (instead of "
                                                "steps_per_generation: it is this / (per_device_train_batch_size "
                                                "* processes)).")
    # ---- what to log ----
    log_completions: bool = f(False, "Print a table of each logged step's prompts, completions, rewards and "
                                     "advantages on stderr (as TRL) and append them to output_dir/completions.jsonl.")
    num_completions_to_print: int | None = f(None, "Completions per logged step in that table and completions.jsonl "
                                                   "(none: the whole generation).")
    num_generations_eval: int | None = f(None, "Completions sampled per eval prompt (none: num_generations).")
    # ---- reference refresh (TR-DPO, Gorbatovski et al. 2024) ----
    sync_ref_model: bool = f(False, "Move the frozen reference towards the policy every ref_model_sync_steps "
                                    "optimiser steps: ref = alpha * policy + (1 - alpha) * ref (needs beta > 0 and "
                                    "a full-weight policy).")
    ref_model_mixup_alpha: float = f(0.6, "alpha of sync_ref_model (1.0: copy the policy).")
    ref_model_sync_steps: int = f(512, "Optimiser steps between two reference refreshes (sync_ref_model).")
    # ---- vLLM (optional; needs `pip install vllm` and a CUDA GPU; untested on hardware) ----
    use_vllm: bool = f(False, "Sample completions with a colocated vLLM engine instead of Hugging Face generate; "
                              "the policy's weights (a LoRA policy: its adapter) are pushed into it before every "
                              "generation that follows an update. See docs/online.md.")
    vllm_mode: str = f("colocate", "Where the vLLM engine runs: colocate (in this process, on the trainer's GPU; "
                                   "the only mode rlhfkit supports).")
    vllm_gpu_memory_utilization: float = f(0.3, "Share of the GPU's memory the colocated vLLM engine may take "
                                                "(the trainer keeps the rest).")
    vllm_sync_timeout_s: float = f(300.0, "Seconds a weight sync into vLLM may take before the run stops with a "
                                          "TimeoutError (a wedged engine must not hang training).")
    # ---- asynchronous generation (docs/online.md, "Asynchronous training") ----
    async_generation: bool = f(False, "Sample the next rollouts in a background thread, from a snapshot of the "
                                      "policy, while the trainer updates on earlier ones (off-policy by up to "
                                      "max_staleness optimiser steps, corrected by importance weights). Single "
                                      "process, Hugging Face generate, single-turn prompts only.")
    max_staleness: int = f(2, "With async_generation: a rollout sampled more than this many optimiser steps "
                              "(policy versions) before the step that would train on it is dropped and a fresh "
                              "one is taken instead (logged as async/dropped).")
    async_queue_size: int = f(1, "With async_generation: finished rollouts (generations) the producer may hold "
                                 "ready ahead of the trainer; a larger queue hides more generation time and makes "
                                 "the rollouts staler.")
    async_weight_sync_steps: int = f(1, "With async_generation: optimiser steps between two weight copies from "
                                        "the trainer into the sampling snapshot (at most max_staleness + 1).")
    async_timeout_s: float = f(600.0, "With async_generation: seconds the trainer waits for the producer's next "
                                      "rollout before it stops with a TimeoutError (a hung reward function or "
                                      "generation must not hang training).")
    # ---- optimisation ----
    num_iterations: int = f(1, "Passes over each generation's completions (mu in the GRPO paper); > 1 reuses "
                               "samples off-policy under the clipped ratio.")
    epsilon: float = f(0.2, "Clip range of the probability ratio: [1 - epsilon, 1 + epsilon_high].")
    epsilon_high: float | None = f(None, "Upper clip range (default: epsilon; DAPO recommends 0.28).")
    mask_truncated_completions: bool = f(False, "Leave completions cut at max_completion_length out of the loss "
                                                "(DAPO's overlong filtering).")
    recompute_old_logprobs: bool = f(False, "Score every generation once more before training (the sampling "
                                            "log-probs) even when the update is on-policy; by default that is "
                                            "done when needed (num_iterations > 1, steps_per_generation > "
                                            "gradient_accumulation_steps, a KL in the reward) and on logging steps, "
                                            "where sampling/logprob_diff_* is logged.")
    padding_free: bool = f(False, PADDING_FREE_HELP)
    max_packed_length: int | None = f(None, MAX_PACKED_LENGTH_HELP)

    def __post_init__(self):
        if self.steps_per_generation is None and self.generation_batch_size is None:
            self.steps_per_generation = self.gradient_accumulation_steps
        super().__post_init__()
        c = Checks(self)
        # beta is each method's own field (GRPO's and RLOO's defaults differ); refused here before a model loads
        if self.sync_ref_model and not getattr(self, "beta", 0.0):
            c.fail("sync_ref_model", "needs beta > 0: with beta = 0 no reference model is kept")
        if self.steps_per_generation is not None and self.generation_batch_size is not None:
            if self.generation_batch_size != self.per_device_train_batch_size * self.steps_per_generation:
                c.fail("generation_batch_size", "set generation_batch_size or steps_per_generation, not both")
        if self.generation_batch_size is not None:
            c.at_least(1, "generation_batch_size")
            if self.generation_batch_size % self.per_device_train_batch_size:
                c.fail("generation_batch_size", f"must be a multiple of per_device_train_batch_size="
                                                f"{self.per_device_train_batch_size}, got {self.generation_batch_size}")
            self.steps_per_generation = self.generation_batch_size // self.per_device_train_batch_size
        c.at_least(2, "num_generations")
        c.at_least(1, "max_prompt_length", "max_completion_length", "steps_per_generation", "num_iterations")
        c.at_least(0, "top_k", "epsilon_high")
        c.positive("temperature", "epsilon", "repetition_penalty")
        c.within("top_p", 0.0, 1.0)
        c.within("min_p", 0.0, 1.0)
        c.at_least(1, "num_completions_to_print", "num_generations_eval")
        c.at_least(0, "max_tool_calling_iterations")
        c.positive("tool_timeout")
        if self.tools is not None and not all(isinstance(s, str) and s.strip() for s in self.tools):
            c.fail("tools", f"must be a list of dotted paths 'package.module:function', got {self.tools!r}")
        c.within("ref_model_mixup_alpha", 0.0, 1.0)
        c.at_least(1, "ref_model_sync_steps")
        longest = None if self.max_prompt_length is None else self.max_prompt_length + self.max_completion_length
        check_padding_free(c, longest, "max_prompt_length + max_completion_length")
        if self.vllm_mode != "colocate":
            c.fail("vllm_mode", f"must be colocate, got {self.vllm_mode!r} (TRL's server mode, `trl vllm-serve`, is "
                                "not supported: run the engine in this process)")
        check_vllm(c)
        check_async(c)
        for name in ("logging_strategy", "eval_strategy", "save_strategy"):
            value = getattr(self, name)
            if value == "epoch" or (name == "logging_strategy" and value == "no"):
                c.fail(name, f"{value!r} is not supported by the online trainers (GRPO, RLOO): they run generation "
                             "cycles over a prompt stream and act every logging_steps/eval_steps/save_steps "
                             "optimiser steps; use 'steps'")
        if self.optim != "adamw_torch_fused":
            c.fail("optim", f"the online trainers (GRPO, RLOO) train with AdamW (adamw_torch_fused) only, got "
                            f"{self.optim!r}")
        if self.torch_compile:
            c.fail("torch_compile", "is not supported by the online trainers (GRPO, RLOO): the policy's forward also "
                                    "runs every generation step, whose shapes change each call")
        if self.top_p == 0:
            c.fail("top_p", "must be in (0, 1], got 0")
        completions = self.per_device_train_batch_size * self.steps_per_generation
        if completions % self.num_generations:
            c.fail("num_generations", f"must divide the completions of one generation, per_device_train_batch_size "
                                      f"* steps_per_generation = {self.per_device_train_batch_size} * "
                                      f"{self.steps_per_generation} = {completions}, got {self.num_generations}")
        if (self.steps_per_generation * self.num_iterations) % self.gradient_accumulation_steps:
            c.fail("steps_per_generation", f"steps_per_generation * num_iterations = {self.steps_per_generation} * "
                                           f"{self.num_iterations} must be a multiple of gradient_accumulation_steps="
                                           f"{self.gradient_accumulation_steps}, so no optimiser step mixes generations")
        if self.reward_weights is not None:
            if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in self.reward_weights):
                c.fail("reward_weights", f"must be a list of numbers, got {self.reward_weights!r}")
            if self.reward_funcs is not None and len(self.reward_weights) != len(self.reward_funcs):
                c.fail("reward_weights", f"has {len(self.reward_weights)} weights for {len(self.reward_funcs)} "
                                         f"reward_funcs; give one weight per function")
        if self.reward_funcs is not None and not all(isinstance(s, str) and s.strip() for s in self.reward_funcs):
            c.fail("reward_funcs", f"must be a list of dotted paths or reward-model folders, got {self.reward_funcs!r}")

    @property
    def epsilon_low(self) -> float:
        return self.epsilon

    @property
    def epsilon_upper(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


def check_vllm(c: Checks) -> None:
    """The vLLM settings GRPO, RLOO and ``rlhfkit ppo`` share: the sync timeout and the GPU share."""
    c.positive("vllm_sync_timeout_s")
    share = c.config.vllm_gpu_memory_utilization
    if not 0 < share <= 1:
        c.fail("vllm_gpu_memory_utilization", f"must be in (0, 1], got {share}")


def check_async(c: Checks) -> None:
    """The asynchronous-generation fields: ranges, and the settings it cannot run with (named)."""
    c.at_least(0, "max_staleness")
    c.at_least(1, "async_queue_size", "async_weight_sync_steps")
    c.positive("async_timeout_s")
    cfg = c.config
    if not cfg.async_generation:
        return
    if cfg.use_vllm:
        c.fail("async_generation", "cannot run with use_vllm=True: the colocated vLLM engine shares the trainer's "
                                   "GPU and process; set one of them to false")
    for name in ("tools", "environment_factory"):
        if getattr(cfg, name):
            c.fail("async_generation", f"does not support multi-turn rollouts ({name} is set): tools and "
                                       f"environments run synchronously; set async_generation=false")
    if cfg.async_weight_sync_steps > cfg.max_staleness + 1:
        c.fail("async_weight_sync_steps", f"must be at most max_staleness + 1 = {cfg.max_staleness + 1}, got "
                                          f"{cfg.async_weight_sync_steps}: a snapshot refreshed less often is "
                                          f"always too stale to train on, and every rollout would be dropped")


def _device():
    """Where reward models run: this process's GPU when there is one (as Accelerate will pick), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return None


def load_prompt_sets(args: LoopConfig, train_dataset, eval_dataset, stacklevel: int = 2):
    """(train, evals) prompt sets of a sampling trainer, each ``(prompts, columns)`` of ``load_prompts``; evals is
    None when there are none.

    ``train_dataset`` / ``eval_dataset`` (a path, ``datasets.Dataset`` or rows) win over ``args.dataset_name`` /
    ``args.eval_dataset_name``; without eval data, ``eval_dataset_split`` of the training source, else
    ``eval_fraction`` of its prompts, is held out. ``eval_strategy='no'`` reads no eval prompts (and warns about
    eval settings given, at ``stacklevel`` above the caller).
    """
    owner = type(args).__name__
    if train_dataset is None and not args.dataset_name:
        raise ConfigError(owner, "dataset_name", "no prompts: pass train_dataset=... or set dataset_name")
    source = train_dataset if train_dataset is not None else args.dataset_name
    check_dataset_config(args, source)
    train = load_prompts(source, args.dataset_split, args.dataset_config)
    if args.eval_strategy == "no":  # as TRL's scripts: no eval prompts are read (the loop evaluates whenever it has some)
        asked = {"eval_dataset": eval_dataset, "eval_dataset_name": args.eval_dataset_name,
                 "eval_dataset_split": args.eval_dataset_split, "eval_fraction": args.eval_fraction or None}
        for name, value in asked.items():
            if value is not None:
                shown = repr(value) if isinstance(value, (str, float)) else f"a {type(value).__name__}"
                warnings.warn(f"{owner}.{name}={shown} has no effect: eval_strategy='no', so no eval prompts are "
                              "loaded", UserWarning, stacklevel=stacklevel + 1)
        evals = None
    elif eval_dataset is not None or args.eval_dataset_name:
        evals = load_prompts(eval_dataset if eval_dataset is not None else args.eval_dataset_name,
                             args.eval_dataset_split or args.dataset_split)
    elif args.eval_dataset_split is not None:
        evals = load_prompts(source, args.eval_dataset_split, args.dataset_config)
    else:
        train, evals = split_prompts(*train, args.eval_fraction, args.seed)
    return train, evals


def prepare(model, reward_funcs, args: OnlineConfig, train_dataset, eval_dataset, processing_class, peft_config,
            reward_processing_classes=None, rollout_engine=None, environment: bool = False):
    """(model, tokenizer, reward_funcs, (prompts, columns), (eval_prompts, eval_columns) or None), checked.

    ``reward_funcs``: a callable, a dotted path, a reward-model folder, or a list of them
    (default: ``args.reward_funcs``). Data and reward functions are checked before the model loads.
    ``environment``: an environment_factory is given, which may be the only reward (no reward_funcs).
    """
    from ..rollout.rewards import load_reward_funcs

    owner = type(args).__name__
    if args.use_vllm and rollout_engine is None:
        from ..rollout.vllm import require_vllm
        require_vllm()  # before any model loads
    check_run(args)
    specs = reward_funcs if reward_funcs is not None else args.reward_funcs
    if environment and (specs is None or (isinstance(specs, (list, tuple)) and not specs)):
        specs = []
    elif specs is None or (isinstance(specs, (list, tuple)) and not specs):
        raise ConfigError(owner, "reward_funcs", "no reward function: pass reward_funcs=... (a callable, a dotted "
                                                 "path 'module:function' or a reward-model folder) or set "
                                                 "reward_funcs in the config")
    specs = list(specs) if isinstance(specs, (list, tuple)) else [specs]
    if args.reward_weights is not None and len(args.reward_weights) != len(specs):
        raise ConfigError(owner, "reward_weights", f"has {len(args.reward_weights)} weights for {len(specs)} reward "
                                                   f"functions; give one weight per function")
    train, evals = load_prompt_sets(args, train_dataset, eval_dataset, stacklevel=3)
    tokenizers = reward_processing_classes if isinstance(reward_processing_classes, (list, tuple)) \
        else [reward_processing_classes] * len(specs)
    if len(tokenizers) != len(specs):
        raise ValueError(f"reward_processing_classes has {len(tokenizers)} entries for {len(specs)} reward functions; "
                         f"give one per function (None where a function needs none)")
    # a bad dotted path or reward-model folder fails here, before the policy loads
    funcs = [func for spec, tok in zip(specs, tokenizers) for func in load_reward_funcs([spec], tok, _device())]
    model, tokenizer = load_model_and_tokenizer(model, processing_class, args)
    if peft_config is not None:
        from peft import get_peft_model

        from ..models.reference import is_peft_model
        if is_peft_model(model):
            raise ValueError("peft_config was given but the model already has adapters; pass one or the other")
        set_seed(args.seed)  # the adapters start from the seed, not from the process's own torch seed
        model = get_peft_model(model, peft_config)
        if args.gradient_checkpointing:
            model.enable_input_require_grads()
    return model, tokenizer, funcs, train, evals
