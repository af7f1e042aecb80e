"""``rlhfkit ppo``: PPO from a config file, with the classic PPOTrainer underneath.

One run: a policy folder (an SFT model) gets a value head; rewards come from a reward-model
folder and/or reward functions (TRL's ``(prompts, completions, **columns) -> scores``
contract, several with weights); prompts come from any dataset the data layer reads (chat
prompts through the tokenizer's template). Optional: a separate critic initialised from the
reward model (InstructGPT), critic warm-up, PTX data, LoRA, held-out evaluation every
``eval_steps`` (reward, KL to the reference, length, truncation, samples), checkpoints and
exact resume, an upload of the final model to the Hub.

``PPORunConfig`` is what the command line reads, in the names every other command uses
(Transformers' ``TrainingArguments`` and TRL 1.x: ``max_steps``, ``per_device_train_batch_size``,
``report_to``, ``bf16``, ...); ``PPORunConfig.ppo_config()`` builds the classic ``PPOConfig``
(TRL 0.11's names, unchanged) that ``PPOTrainer`` gets. Computed ``PPOConfig`` fields and its
free-text labels are not part of it.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..trainers import PPOConfig
from ..trainers.config import ATTENTION, Checks, ConfigError, check_field_types, check_padding_free, f, field_default
from ..trainers.online_config import check_vllm
from ..trainers.trackers import resolve_trackers

GENERATION = ("max_new_tokens", "temperature", "top_k", "top_p")
# PPOConfig fields that rlhfkit ppo names as TrainingArguments / TRL 1.x do, value for value: {classic: new}
RENAMED = {"steps": "max_steps", "batch_size": "per_device_train_batch_size", "ppo_epochs": "num_ppo_epochs",
           "init_kl_coef": "kl_coef"}


def _knob(name: str, help: str | None = None):
    """A PPOConfig knob under its own name: PPOConfig's default and (unless ``help`` says more) help text."""
    fld = next(x for x in fields(PPOConfig) if x.name == name)
    return f(field_default(PPOConfig, name), help or fld.metadata["help"])


@dataclass
class PPORunConfig:
    """The fields of ``rlhfkit ppo``: flags, ``--config`` YAML keys, ``key=value`` overrides, config.yaml."""

    # A classic PPOConfig name given as a flag, YAML key or override is refused with the one to use here.
    CLASSIC_NAMES = {**RENAMED, "exp_name": "run_name", "log_with": "report_to", "mixed_precision": ("bf16", "fp16")}
    CLASSIC_CONFIG = "PPOConfig"

    # ---- what to train on ----
    model_name_or_path: str | None = f(None, "Policy to train: a causal-LM folder (typically an SFT output) or hub "
                                             "id; it gets a fresh value head unless the folder has one.")
    reward_model_path: str | None = f(None, "Reward-model folder (AutoModelForSequenceClassification, 1 label) "
                                            "scoring prompt + response.")
    reward_funcs: str | None = f(None, "Reward functions, comma-separated: 'package.module:function' "
                                       "(called (prompts, completions, **columns) -> scores, as TRL) or "
                                       "reward-model folders.", comma_list=True)
    reward_weights: str | None = f(None, "Comma-separated weights, one per reward source: the reward model first "
                                         "(if any), then reward_funcs in order (default: all 1).", comma_list=True)
    dataset_name: str | None = f(None, "Prompts: a .txt file (one per line), a .jsonl/.json/.csv/.parquet file, a "
                                       "folder or a saved/hub dataset in any format the data layer reads (prompt, preference, "
                                       "conversational, ...); other columns reach the reward functions.")
    dataset_split: str = f("train", "Split to read when the dataset has several.")
    eval_dataset_name: str | None = f(None, "Held-out prompts in the same forms (default: eval_fraction of "
                                            "dataset_name).")
    eval_fraction: float = f(0.0, "Fraction of the prompts held out for evaluation when no eval dataset is given.")
    ptx_dataset_name: str | None = f(None, "SFT data (texts or prompt/completion rows) for the ptx loss; needs "
                                           "ptx_coef > 0.")
    dtype: str = f("float32", "Weights dtype when loading: float32, bfloat16 or float16.")
    attn_implementation: str | None = f(None, f"Attention kernel of the policy and the critic, one of {ATTENTION} "
                                              "or a hub kernel 'owner/name' (none: Transformers' default).")
    # ---- how long, how much per step ----
    max_steps: int = f(100, "PPO steps (iterations: sample, score, update) to run.")
    per_device_train_batch_size: int = f(128, "Rollouts (prompt, response, score) per PPO step on each process "
                                              "(PPOConfig's batch_size).")
    mini_batch_size: int = _knob("mini_batch_size", "Rollouts per gradient minibatch; per_device_train_batch_size "
                                                    "must be a multiple of mini_batch_size * "
                                                    "gradient_accumulation_steps.")
    gradient_accumulation_steps: int = _knob("gradient_accumulation_steps")
    num_ppo_epochs: int = f(4, "Passes over each step's rollouts (PPOConfig's ppo_epochs).")
    learning_rate: float = _knob("learning_rate")
    seed: int = _knob("seed")
    # ---- sampling ----
    max_prompt_length: int = f(256, "Keep the last this many prompt tokens.")
    max_new_tokens: int = f(32, "Longest sampled response, in tokens.")
    temperature: float = f(1.0, "Sampling temperature of the rollouts.")
    top_k: int = f(0, "Sample from the top k tokens only (0: all).")
    top_p: float = f(1.0, "Nucleus sampling mass (1.0: off).")
    # ---- multi-turn episodes: tools and environments (docs/agents.md#ppo) ----
    tools: list[str] | None = _knob("tools", "Tools the model may call, as dotted paths 'package.module:function' "
                                             "(type hints and a Google-style docstring each); a call's result is "
                                             "inserted and the model goes on.")
    environment_factory: str | None = _knob("environment_factory", "Dotted path to an environment class (one "
                                                                   "instance per episode: reset(**columns), then "
                                                                   "step(action) or tool methods, optional "
                                                                   "get_reward()), or to a dict of them by name; "
                                                                   "its reward is added to the reward sources' (it "
                                                                   "may be the only reward).")
    environment_column: str = _knob("environment_column", "Dataset column naming each prompt's environment when "
                                                          "environment_factory is a dict of them.")
    max_tool_calling_iterations: int | None = _knob("max_tool_calling_iterations", "Most inserted turns (tool "
                                                                                   "results or environment "
                                                                                   "observations) per episode; "
                                                                                   "none: no limit but "
                                                                                   "max_new_tokens, which caps the "
                                                                                   "model's and the inserted tokens "
                                                                                   "together.")
    tool_timeout: float | None = _knob("tool_timeout", "Seconds a tool call or environment reset/step/get_reward "
                                                       "may take; one that runs longer ends its episode (none: no "
                                                       "limit).")
    # ---- KL penalty ----
    kl_coef: float = f(0.2, "Initial (or, with adap_kl_ctrl false, fixed) coefficient of the per-token KL penalty "
                            "(PPOConfig's init_kl_coef).")
    adap_kl_ctrl: bool = _knob("adap_kl_ctrl", "Adapt the KL coefficient towards `target` (Ziegler et al. 2019); "
                                               "else keep kl_coef.")
    kl_penalty: str = _knob("kl_penalty")
    target: float = _knob("target")
    horizon: float = _knob("horizon")
    # ---- advantages and losses ----
    gamma: float = _knob("gamma")
    lam: float = _knob("lam")
    cliprange: float = _knob("cliprange")
    cliprange_value: float = _knob("cliprange_value")
    vf_coef: float = _knob("vf_coef")
    whiten_rewards: bool = _knob("whiten_rewards")
    whiten_advantages: bool = _knob("whiten_advantages")
    use_score_scaling: bool = _knob("use_score_scaling")
    use_score_norm: bool = _knob("use_score_norm")
    score_clip: float | None = _knob("score_clip")
    missing_eos_penalty: float | None = _knob("missing_eos_penalty")
    dual_clip: float | None = _knob("dual_clip")
    entropy_coef: float = _knob("entropy_coef")
    early_stopping: bool = _knob("early_stopping")
    target_kl: float = _knob("target_kl")
    ratio_threshold: float = _knob("ratio_threshold")
    # ---- critic and ptx ----
    critic_from_reward_model: bool = f(False, "Train a separate critic initialised from reward_model_path "
                                              "(InstructGPT) instead of the value head on the policy.")
    critic_learning_rate: float | None = _knob("critic_learning_rate")
    critic_warmup_steps: int = _knob("critic_warmup_steps", "First PPO steps that train only the value function, "
                                                            "policy frozen.")
    ptx_coef: float = _knob("ptx_coef", "Weight of the SFT (ptx) language-modelling loss mixed into each minibatch "
                                        "(InstructGPT's PPO-ptx); needs ptx_dataset_name.")
    ptx_batch_size: int = _knob("ptx_batch_size")
    # ---- optimiser, precision, memory ----
    optimizer: str = _knob("optimizer", "Optimiser: 'adam' (classic) or 'adamw'.")
    weight_decay: float = _knob("weight_decay")
    max_grad_norm: float | None = _knob("max_grad_norm")
    bf16: bool = f(False, "bfloat16 autocast for the forward/backward passes (weights and optimiser stay float32).")
    fp16: bool = f(False, "float16 autocast with loss scaling (GPUs).")
    gradient_checkpointing: bool = _knob("gradient_checkpointing")
    optimize_device_cache: bool = _knob("optimize_device_cache", "Free the accelerator cache between the phases of a "
                                                                 "PPO step (slower, less memory).")
    disable_dropout: bool = _knob("disable_dropout")
    fuse_activations: bool = _knob("fuse_activations")
    reuse_rollout_logprobs: bool = _knob("reuse_rollout_logprobs")
    padding_free: bool = _knob("padding_free")
    max_packed_length: int | None = _knob("max_packed_length")
    accelerator_kwargs: dict = _knob("accelerator_kwargs")
    # ---- LoRA ----
    use_peft: bool = f(False, "Train LoRA adapters on the policy; the reference is then the adapter-disabled "
                              "base (no second copy).")
    lora_r: int = f(16, "LoRA rank.")
    lora_alpha: int = f(32, "LoRA alpha.")
    lora_dropout: float = f(0.05, "LoRA dropout.")
    lora_target_modules: str | None = f(None, "Modules that get adapters (comma-separated; default: PEFT's choice "
                                              "for the architecture).", comma_list=True)
    # ---- vLLM ----
    use_vllm: bool = f(False, "Sample the rollouts with a colocated vLLM engine (needs `pip install vllm` and a CUDA "
                              "GPU; untested on hardware); the policy (a LoRA policy: its adapter) is pushed into it "
                              "after every PPO step.")
    vllm_gpu_memory_utilization: float = f(0.3, "Share of the GPU's memory the vLLM engine may take.")
    vllm_sync_timeout_s: float = f(300.0, "Seconds a weight push into vLLM may take before the run stops with a "
                                          "TimeoutError.")
    # ---- evaluation ----
    eval_steps: int = f(0, "Evaluate on the held-out prompts every this many PPO steps (0: only at the end, when "
                           "there are held-out prompts).")
    eval_prompts: int = f(64, "Held-out prompts per evaluation (the first ones, the same every time).")
    eval_samples_to_log: int = f(4, "Prompt/response/reward samples written to eval_samples.jsonl per evaluation.")
    log_completions: bool = f(False, "Print a table of each PPO step's prompts, responses and rewards on stderr and "
                                     "append them to output_dir/completions.jsonl (as GRPO's log_completions).")
    num_completions_to_print: int | None = f(None, "Responses per step in that table and completions.jsonl (none: "
                                                   "the whole batch).")
    # ---- where results go ----
    output_dir: str = _knob("output_dir", "Folder for metrics.jsonl, eval_samples.jsonl, checkpoints and the final "
                                          "model (final/).")
    run_name: str | None = f(None, "Name of the run: W&B's run name and PPOConfig's exp_name (none: the name of "
                                   "output_dir).")
    report_to: str = f("tensorboard", "Comma-separated loggers: jsonl, tensorboard, wandb, trackio, all; 'none' for "
                                      "none. metrics.jsonl goes to output_dir whatever this says.")
    tracker_project_name: str = _knob("tracker_project_name")
    tracker_kwargs: dict = _knob("tracker_kwargs")
    project_kwargs: dict = _knob("project_kwargs", "Keyword arguments for accelerate's ProjectConfiguration "
                                                   "(logging_dir defaults to output_dir).")
    save_steps: int = _knob("save_steps", "Write a checkpoint every this many PPO steps (0: only at the end).")
    save_total_limit: int | None = f(None, "Keep at most this many checkpoints.")
    resume_from_checkpoint: str | None = f(None, "A checkpoint-<step> folder in output_dir, or 'latest'.")
    push_to_hub: bool = f(False, "Upload output_dir/final (model, value head, tokenizer, README.md model card) to the "
                                 "Hugging Face Hub after training; needs a reachable hub and a login "
                                 "(`hf auth login`).")
    hub_model_id: str | None = f(None, "Hub repository 'owner/name' (or 'name') for push_to_hub (default: the "
                                       "name of output_dir).")

    def __post_init__(self):
        check_field_types(self)
        c = Checks(self)
        c.non_empty("model_name_or_path", "dataset_name", "reward_model_path", "reward_funcs", "eval_dataset_name",
                    "ptx_dataset_name", "resume_from_checkpoint", "output_dir", "run_name", "hub_model_id")
        c.at_least(1, "eval_prompts", "max_new_tokens", "max_prompt_length", "max_steps", "save_total_limit")
        c.at_least(1, "num_completions_to_print")
        c.at_least(0, "eval_steps", "eval_samples_to_log", "top_k", "save_steps")
        c.within("eval_fraction", 0.0, 1.0, high_open=True)
        c.within("top_p", 0.0, 1.0)
        c.choice("dtype", ("float32", "bfloat16", "float16"))
        check_padding_free(c, self.max_prompt_length + self.max_new_tokens, "max_prompt_length + max_new_tokens")
        if self.temperature <= 0:
            c.fail("temperature", f"must be > 0, got {self.temperature}")
        # the checks of LoopConfig (every other command): attention kernel, trackers, precision, hub id
        c.attention_and_trackers()
        if self.bf16 and self.fp16:
            c.fail("fp16", "choose one of bf16 and fp16, not both")
        if self.hub_model_id is not None and self.hub_model_id.count("/") > 1:
            c.fail("hub_model_id", f"must look like 'owner/name' or 'name', got {self.hub_model_id!r}")
        check_vllm(c)
        if self.critic_from_reward_model and not self.reward_model_path:
            c.fail("critic_from_reward_model", "needs reward_model_path (the critic starts from that reward model)")
        if self.eval_dataset_name and self.eval_fraction:
            c.fail("eval_fraction", "set eval_dataset_name or eval_fraction, not both")
        if self.multi_turn() and (self.eval_dataset_name or self.eval_fraction):
            c.fail("eval_dataset_name" if self.eval_dataset_name else "eval_fraction",
                   "held-out evaluation samples single-turn responses; it is not available with tools or "
                   "environment_factory (leave eval_dataset_name and eval_fraction unset)")
        if self.ptx_coef > 0 and not self.ptx_dataset_name:
            c.fail("ptx_coef", "> 0 needs ptx_dataset_name (the SFT data mixed into each minibatch)")
        n = len(self.reward_sources())
        if self.reward_weights is not None:
            try:
                weights = [float(w) for w in self.reward_weights.split(",")]
            except ValueError:
                c.fail("reward_weights", f"must be comma-separated numbers, got {self.reward_weights!r}")
            if len(weights) != n:
                c.fail("reward_weights", f"has {len(weights)} weights for {n} reward sources "
                                         f"({', '.join(self.reward_sources()) or 'none'})")
        try:
            self.ppo_config()  # PPOConfig's own checks (batch sizes, kl_penalty, ...), under this config's names
        except ConfigError as err:
            new = self.CLASSIC_NAMES.get(err.field, err.field)
            c.fail(new if isinstance(new, str) else new[0], err.problem)

    def ppo_config(self) -> PPOConfig:
        """The classic PPOConfig PPOTrainer gets: the knobs of the same name, the renamed ones under their classic
        names, trackers from report_to, mixed precision from bf16/fp16, logs under output_dir."""
        classic = {x.name for x in fields(PPOConfig)}
        values = {x.name: getattr(self, x.name) for x in fields(self) if x.name in classic}
        values.update({old: getattr(self, new) for old, new in RENAMED.items()})
        values["exp_name"] = self.run_name or Path(self.output_dir).name
        values["log_with"] = resolve_trackers(self.report_to) or None  # Accelerate's tracker names, as the loop's
        values["mixed_precision"] = "bf16" if self.bf16 else "fp16" if self.fp16 else "no"
        values["project_kwargs"] = {**self.project_kwargs,
                                    "logging_dir": self.project_kwargs.get("logging_dir") or self.output_dir}
        if self.run_name:  # W&B names the run after it, as TrainingArguments.run_name does
            values["tracker_kwargs"] = {**self.tracker_kwargs,
                                        "wandb": {"name": self.run_name, **self.tracker_kwargs.get("wandb", {})}}
        return PPOConfig(**values)

    def multi_turn(self) -> bool:
        """Responses are multi-turn episodes (tools or an environment)."""
        return bool(self.tools) or self.environment_factory is not None

    def reward_sources(self) -> list[str]:
        """The reward model (if any) then each reward function, in order."""
        funcs = [s.strip() for s in (self.reward_funcs or "").split(",") if s.strip()]
        return ([self.reward_model_path] if self.reward_model_path else []) + funcs

    def weights(self) -> list[float] | None:
        return [float(w) for w in self.reward_weights.split(",")] if self.reward_weights else None

    def generation_kwargs(self) -> dict:
        return dict(do_sample=True, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                    top_k=self.top_k, top_p=self.top_p)


def check_run_inputs(config: PPORunConfig):
    """Everything that can be checked before a model loads: sources, reward functions, data (every row).

    Returns the loaded ``((prompts, columns), eval or None)`` so the data is read once.
    """
    from ..models.loading import check_model_source, check_push
    from ..rollout.prompts import load_prompts, split_prompts

    if not config.model_name_or_path:
        raise ValueError("model_name_or_path is required: the policy to train (an SFT folder)")
    if not config.dataset_name:
        raise ValueError("dataset_name is required: the prompts to train on")
    if not config.reward_sources() and config.environment_factory is None:
        raise ValueError("give reward_model_path and/or reward_funcs (or an environment_factory whose environment "
                         "gives a reward): PPO needs a reward")
    if config.use_vllm:
        from ..rollout.vllm import require_vllm
        require_vllm()
    check_push(config)
    check_model_source(config.model_name_or_path, "model_name_or_path")
    if config.reward_model_path:
        check_model_source(config.reward_model_path, "reward_model_path")
    train = load_prompts(config.dataset_name, config.dataset_split)
    if config.eval_dataset_name:
        return train, load_prompts(config.eval_dataset_name, config.dataset_split)
    return split_prompts(*train, config.eval_fraction, config.seed)


def run_ppo(config: PPORunConfig, progress: bool = True, on_loaded=None) -> dict:
    """Load everything, train with ``PPOTrainer.train``, evaluate, write the model card (and upload
    ``output_dir/final`` when ``push_to_hub``); returns a summary dict.

    ``on_loaded()`` is called once data, reward sources and models have loaded, before training
    (the CLI writes the resolved config then, so a failed load leaves no new files). A failed
    upload raises ``HubError`` after the model is saved.
    """
    from .. import data
    from ..models import AutoModelForCausalLMWithValueHead, CriticModel
    from ..models.loading import load_tokenizer, lora_config
    from ..rollout.prompts import render_prompts
    from ..rollout.rewards import load_reward_funcs
    from ..rollout.sampling import build_engine
    from ..trainers import PPOTrainer, set_seed

    (prompts, columns), held = check_run_inputs(config)
    tokenizer = load_tokenizer(config.model_name_or_path, "model_name_or_path")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        reward_funcs = load_reward_funcs(config.reward_sources(), tokenizer=tokenizer) if config.reward_sources() \
            else []  # an environment's reward alone
    except ValueError as err:  # a dotted path that does not import, a folder that is no reward model
        field = "reward_model_path" if config.reward_model_path and "reward_funcs[0]" in str(err) else "reward_funcs"
        raise ConfigError("PPORunConfig", field, str(err)) from None
    load = {"dtype": getattr(torch, config.dtype)}
    if config.attn_implementation is not None:
        load["attn_implementation"] = config.attn_implementation
    set_seed(config.seed)  # the fresh value head (and LoRA) initialise from the seed, not from leftover RNG state
    peft_config = lora_config(config, "CAUSAL_LM") if config.use_peft else None
    policy = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name_or_path, peft_config=peft_config,
                                                               **load)
    critic = CriticModel.from_pretrained(config.reward_model_path, **load) if config.critic_from_reward_model else None
    ptx = _ptx_texts(config.ptx_dataset_name, tokenizer) if config.ptx_dataset_name else None
    engine = build_engine(config, policy, dtype=config.dtype) if config.use_vllm else None
    with warnings.catch_warnings():  # prompts come from dataset_name; the classic "no dataset" warning is noise
        warnings.filterwarnings("ignore", message="No dataset is provided")
        trainer = PPOTrainer(config.ppo_config(), policy, None, tokenizer, critic=critic, ptx_dataset=ptx,
                             rollout_engine=engine)
    chat = bool(prompts) and data.is_conversational(prompts[0])
    if config.multi_turn():  # episodes: the agent renders the prompts itself, with the tools' schemas
        reward_fn = _episode_reward_fn(reward_funcs, config.weights()) if reward_funcs else None
        train_prompts = prompts
    else:
        reward_fn = _reward_fn(reward_funcs, config.weights(), prompts, chat)
        train_prompts = render_prompts(tokenizer, prompts)
    eval_fn = _evaluator(trainer, config, held, reward_funcs, chat) if held is not None else None
    if on_loaded is not None:
        on_loaded()
    history = trainer.train(reward_fn, train_prompts, steps=config.max_steps,
                            generation_kwargs=config.generation_kwargs(), output_dir=config.output_dir,
                            save_steps=config.save_steps, resume_from_checkpoint=config.resume_from_checkpoint,
                            save_total_limit=config.save_total_limit, progress=progress,
                            columns={"_index": list(range(len(prompts))), **columns},
                            max_prompt_length=config.max_prompt_length, add_special_tokens=not chat,
                            eval_fn=eval_fn, eval_steps=config.eval_steps, log_completions=config.log_completions,
                            num_completions_to_print=config.num_completions_to_print)
    if trainer.accelerator.is_main_process:
        _publish(config, history)
    train_rows = [r for r in history if "reward" in r]
    evals = [r for r in history if "eval/reward_mean" in r]
    return {"output_dir": config.output_dir, "final": str(Path(config.output_dir) / "final"),
            "steps": trainer.current_step, "reward_first": train_rows[0]["reward"] if train_rows else None,
            "reward_last": train_rows[-1]["reward"] if train_rows else None, "evals": evals}


def _publish(config: PPORunConfig, history: list[dict]) -> None:
    """As the other trainers finish: a model card in output_dir/final, then its upload when push_to_hub."""
    from ..models.loading import push_folder, write_model_card

    final = Path(config.output_dir) / "final"
    last: dict = {}
    for row in history:
        last.update({k: v for k, v in row.items() if k != "step"})
    write_model_card(final, method="ppo", config=config, metrics=last)
    if config.push_to_hub:
        push_folder(final, config.hub_model_id or Path(config.output_dir).name)


def _ptx_texts(source, tokenizer) -> list[str]:
    """SFT rows of any format as whole training texts for the ptx loss (conversations rendered)."""
    from .. import data

    rows = data.to_sft(data.load_records(source))
    if "messages" in rows.column_names:
        return [data.render_messages(tokenizer, m, add_generation_prompt=False) for m in rows["messages"]]
    return [p + c for p, c in zip(rows["prompt"], rows["completion"])]


def _completions(texts: list[str], chat: bool) -> list:
    """TRL's form: chat prompts get completions as one assistant message each."""
    return [[{"role": "assistant", "content": t}] for t in texts] if chat else list(texts)


def _reward_fn(reward_funcs, weights, prompts: list, chat: bool):
    """train_ppo's ``reward_fn(rendered_prompts, texts, _index=..., **columns)`` over the reward sources."""
    from ..rollout.rewards import score

    def reward(_rendered, texts, _index, **columns):
        rewards, _ = score(reward_funcs, weights, [prompts[i] for i in _index], _completions(texts, chat), columns)
        return rewards.tolist()

    return reward


def _episode_reward_fn(reward_funcs, weights):
    """train_ppo's reward_fn over episodes: the reward sources get the prompts as the episodes saw them, the
    completions as messages (chat) or text, the dataset's columns, ``environments`` and ``episodes``."""
    from ..rollout.rewards import score

    def reward(prompts, completions, _index, **columns):
        rewards, _ = score(reward_funcs, weights, prompts, completions, columns)
        return rewards.tolist()

    return reward


def _evaluator(trainer, config: PPORunConfig, held, reward_funcs, chat: bool):
    """Held-out evaluation through ``rollout.evaluate_policy``, the online trainers' own: one sampled
    response per prompt, tokenised, sampled and scored as training does it; its reward, KL to the
    reference, length, truncation under this command's ``eval/*`` names; samples to eval_samples.jsonl."""
    from ..eval.metrics import response_logprobs, sequence_kl
    from ..models import reference_context
    from ..rollout.evaluate import evaluate_policy, sample_and_score
    from ..rollout.rewards import score
    from ..rollout.sampling import Completions

    prompts, columns = held
    n = min(config.eval_prompts, len(prompts))
    prompts, columns = prompts[:n], {k: v[:n] for k, v in columns.items()}
    tokenizer = trainer.tokenizer
    completions = Completions(tokenizer, config.generation_kwargs())  # Hugging Face generate, seeded below
    samples_path = Path(config.output_dir) / "eval_samples.jsonl"
    sources = [Path(src).name or src for src in config.reward_sources()]
    eos = tokenizer.eos_token_id

    def score_fn(funcs, weights, batch_prompts, batch_completions, cols):
        # the reward functions get what training hands them (_reward_fn): the dataset's columns only
        return score(funcs, weights, batch_prompts, batch_completions,
                     {k: v for k, v in cols.items() if k != "completion_ids"})

    def kl(sampled) -> dict:
        """Summed per-token k3 estimate of KL(policy || reference) of each sampled response: (n,)."""
        model, pad = trainer.unwrapped_model, trainer.pad_token_id
        size = len(sampled.queries)
        logprobs, mask = response_logprobs(model, sampled.queries, sampled.responses, pad, size)  # (n, R) each
        with reference_context(trainer.model, trainer.ref_model):  # a LoRA policy: the adapter-disabled base
            ref = trainer.ref_model if trainer.ref_model is not None else model
            ref_logprobs, _ = response_logprobs(ref, sampled.queries, sampled.responses, pad, size)  # (n, R)
        return {"kl": sequence_kl(logprobs, ref_logprobs, mask, "k3")}

    def summary(evaluation) -> dict:
        rewards, per_func = evaluation.rewards, evaluation.per_func  # (n,), (n, sources)
        texts = tokenizer.batch_decode(evaluation.responses, skip_special_tokens=True)
        _write_samples(samples_path, trainer.current_step, evaluation.prompts, texts, rewards.tolist(),
                       config.eval_samples_to_log, trainer.accelerator.is_main_process)
        lengths = np.array([len(r) for r in evaluation.responses])
        truncated = np.mean([int(r[-1]) != eos for r in evaluation.responses])  # no EOS: cut at max_new_tokens
        metrics = {"eval/reward_mean": float(rewards.mean()), "eval/reward_std": float(rewards.std(correction=0)),
                   "eval/kl": float(evaluation.extra["kl"].mean()), "eval/length_mean": float(lengths.mean()),
                   "eval/truncated": float(truncated), "eval/prompts": n}
        if per_func.shape[1] > 1:
            for j, src in enumerate(sources):
                metrics[f"eval/rewards/{src}"] = float(torch.nanmean(per_func[:, j]))
        return metrics

    @torch.no_grad()
    def evaluate(trainer) -> dict:
        sample = functools.partial(sample_and_score, trainer.unwrapped_model, tokenizer, completions, reward_funcs,
                                   reward_weights=config.weights(), max_prompt_length=config.max_prompt_length,
                                   device=trainer.accelerator.device, step=trainer.current_step, score_fn=score_fn,
                                   add_special_tokens=not chat)  # text prompts: as train_ppo encodes them
        with torch.random.fork_rng(devices=[]):  # evaluation never moves the training RNG (exact resume)
            torch.manual_seed(config.seed)
            return evaluate_policy(sample, reward_funcs, prompts, columns, num_generations=1,
                                   batch_size=config.mini_batch_size, per_sample=kl, summary=summary)

    return evaluate


def _write_samples(path: Path, step: int, prompts, texts, rewards, k: int, main: bool) -> None:
    if not main or not k:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for p, t, r in list(zip(prompts, texts, rewards))[:k]:
            out.write(json.dumps({"step": step, "prompt": p, "response": t, "reward": r}, ensure_ascii=False) + "\n")
