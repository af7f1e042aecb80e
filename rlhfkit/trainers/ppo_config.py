"""PPOConfig: the classic field names and defaults (TRL 0.11.4), plus opt-in stability tricks.

Every field carries its help text once, in ``metadata["help"]``; ``docs/ppo.md`` and the
CLI's ``--help`` are generated from it. Old scripts and YAML configs keep working: the
classic fields have the classic meaning and default.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields

from .config import MAX_PACKED_LENGTH_HELP, PADDING_FREE_HELP, Checks, ConfigError, check_padding_free, field_default, \
    warn_ignored


def _f(default, help: str, **kw):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


KL_PENALTIES = ("kl", "abs", "mse", "k2", "k3", "full")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class PPOConfig:
    # Classic fields accepted so old scripts and YAML configs run, that change nothing here: a value other
    # than the default warns with the reason (``config.warn_ignored``).
    IGNORED = {
        "push_to_hub_if_best_kwargs": "rlhfkit never pushes to the Hub from PPOTrainer (TRL 0.11 did, through "
                                      "push_to_hub_if_best); push the saved folder with huggingface_hub instead",
        "compare_steps": "it is the interval of TRL's push-to-hub-if-best comparison, which rlhfkit does not do",
        "dataset_num_proc": "PPOTrainer preprocesses no dataset (rows are tokenized by your code, or by rlhfkit ppo "
                            "in one process)",
    }

    # ---- bookkeeping (classic) ----
    exp_name: str = _f(os.path.splitext(os.path.basename(sys.argv[0] or "rlhfkit"))[0], "Name of this experiment, used in logs.")
    seed: int = _f(0, "Random seed for torch, numpy and Python, and for minibatch shuffling.")
    log_with: str | None = _f(None, "Tracker: None, 'tensorboard', 'wandb' or 'jsonl' (JSONL metrics in project_kwargs['logging_dir']).")
    task_name: str | None = _f(None, "Free-form task name, logged with the config.")
    model_name: str | None = _f(None, "Free-form model name, logged with the config.")
    query_dataset: str | None = _f(None, "Free-form dataset name, logged with the config.")
    reward_model: str | None = _f(None, "Free-form reward model name, logged with the config.")
    remove_unused_columns: bool = _f(True, "Drop dataset columns the model's forward does not take (except 'query'/'response'/'input_ids').")
    tracker_kwargs: dict = _f({}, "Keyword arguments for the tracker's init (e.g. wandb's {'name': ...}).")
    accelerator_kwargs: dict = _f({}, "Keyword arguments passed to accelerate.Accelerator.")
    project_kwargs: dict = _f({}, "Keyword arguments for accelerate's ProjectConfiguration (e.g. {'logging_dir': 'runs/x'}).")
    tracker_project_name: str = _f("rlhfkit", "Project name for the tracker.")
    push_to_hub_if_best_kwargs: dict = _f({}, "Accepted for compatibility and ignored (a warning when set): rlhfkit never pushes to a hub.")
    steps: int = _f(20000, "Number of PPO iterations for train(); the classic loop decides its own length.")
    # ---- optimisation (classic) ----
    learning_rate: float = _f(1.41e-5, "Adam learning rate of the policy (and of the shared value head).")
    batch_size: int = _f(128, "Rollouts per step(): the number of (query, response, score) triples.")
    forward_batch_size: int | None = _f(None, "Deprecated alias of mini_batch_size for the no-grad forward passes.")
    mini_batch_size: int = _f(128, "Rollouts per gradient minibatch; batch_size must be a multiple of it.")
    gradient_accumulation_steps: int = _f(1, "Minibatches accumulated per optimiser step.")
    ppo_epochs: int = _f(4, "Passes over the rollout batch per step().")
    max_grad_norm: float | None = _f(None, "Clip the gradient norm to this value (None: no clipping).")
    early_stopping: bool = _f(False, "Stop the PPO epochs of a step once policy KL exceeds 1.5 * target_kl.")
    target_kl: float = _f(1.0, "KL threshold for early_stopping.")
    ratio_threshold: float = _f(10.0, "Skip a minibatch (zero loss) whose mean probability ratio exceeds this.")
    compare_steps: int = _f(1, "Accepted for compatibility and ignored (a warning when not 1): TRL's push-to-hub-if-best interval.")
    optimize_cuda_cache: bool | None = _f(None, "Deprecated alias of optimize_device_cache.")
    optimize_device_cache: bool = _f(False, "Free the accelerator cache between phases of step() (slower, less memory).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    # ---- KL penalty (classic) ----
    adap_kl_ctrl: bool = _f(True, "Adapt the KL coefficient towards `target` (Ziegler et al. 2019); else keep init_kl_coef.")
    init_kl_coef: float = _f(0.2, "Initial (or fixed) coefficient of the per-token KL penalty.")
    kl_penalty: str = _f("kl", f"KL estimator per token, one of {KL_PENALTIES}: 'kl' = k1 log-ratio, 'abs' = |k1|, 'mse'/'k2' = k1^2/2, 'k3' = Schulman's unbiased low-variance estimator, 'full' = exact KL over the vocabulary.")
    target: float = _f(6.0, "Target KL (nats per sequence) of the adaptive controller.")
    horizon: float = _f(10000.0, "Horizon of the adaptive controller: larger reacts more slowly.")
    # ---- advantages and losses (classic) ----
    gamma: float = _f(1.0, "Discount factor of GAE.")
    lam: float = _f(0.95, "Lambda of GAE (bias/variance trade-off).")
    cliprange: float = _f(0.2, "PPO ratio clip epsilon for the policy loss.")
    cliprange_value: float = _f(0.2, "Clip of the value prediction around the rollout value.")
    vf_coef: float = _f(0.1, "Weight of the value loss in the total loss.")
    whiten_rewards: bool = _f(False, "Whiten the per-token rewards (scale only) before GAE.")
    use_score_scaling: bool = _f(False, "Divide scores by their running standard deviation.")
    use_score_norm: bool = _f(False, "With use_score_scaling: also subtract the running mean.")
    score_clip: float | None = _f(None, "Clip (scaled) scores to [-score_clip, score_clip].")
    # ---- classic fields computed or unused ----
    world_size: int | None = _f(None, "Set from the number of processes; do not set by hand.")
    is_encoder_decoder: bool | None = _f(None, "Set from the model (True for AutoModelForSeq2SeqLMWithValueHead).")
    is_peft_model: bool | None = _f(None, "Set from the model.")
    backward_batch_size: int | None = _f(None, "Computed: mini_batch_size * gradient_accumulation_steps.")
    global_backward_batch_size: int | None = _f(None, "Computed: backward_batch_size * world_size.")
    global_batch_size: int | None = _f(None, "Computed: batch_size * world_size.")
    dataset_num_proc: int | None = _f(None, "Accepted for compatibility and ignored (a warning when set): PPOTrainer preprocesses no dataset.")
    # ---- rlhfkit additions (all off by default unless noted) ----
    mixed_precision: str = _f("no", f"One of {MIXED_PRECISION}: autocast the forward/backward passes (weights and optimiser stay float32).")
    disable_dropout: bool = _f(True, "Turn dropout off in policy, reference and critic so log-probs of rollout and update agree (KL exactly 0 before the first update). Set False for TRL 0.11 behaviour.")
    whiten_advantages: bool = _f(True, "Whiten advantages over the batch (classic behaviour).")
    dual_clip: float | None = _f(None, "Dual-clip constant c > 1 bounding the loss of negative-advantage tokens (Ye et al. 2020).")
    entropy_coef: float = _f(0.0, "Weight of an entropy bonus in the policy loss.")
    missing_eos_penalty: float | None = _f(None, "Subtract this from the score of responses that do not end with EOS (truncated).")
    critic_learning_rate: float | None = _f(None, "Learning rate of a separate critic model (default: learning_rate).")
    critic_warmup_steps: int = _f(0, "First step() calls that train only the value function, policy frozen.")
    ptx_coef: float = _f(0.0, "Weight of the SFT (ptx) language-modelling loss mixed into each minibatch (InstructGPT's PPO-ptx); needs ptx_dataset.")
    ptx_batch_size: int = _f(4, "Sequences of ptx data per minibatch.")
    optimizer: str = _f("adam", "Optimiser when none is passed: 'adam' (classic) or 'adamw'.")
    weight_decay: float = _f(0.0, "Weight decay for 'adamw'.")
    fuse_activations: bool = _f(True, "Run GPT-2's composed gelu_new as PyTorch's fused kernel and, under CPU autocast, attention in float32 (same function; models/fused.py).")
    reuse_rollout_logprobs: bool = _f(True, "Reuse the log-probs/values computed while sampling (fp32, plain sampling) as the old policy's, after the first step verified them against a recompute; False: always recompute.")
    padding_free: bool = _f(False, PADDING_FREE_HELP)
    max_packed_length: int | None = _f(None, MAX_PACKED_LENGTH_HELP)
    # ---- multi-turn episodes for train(): tools and environments (docs/agents.md#ppo) ----
    tools: list[str] | None = _f(None, "train(): tools the model may call, as dotted paths 'package.module:function' (type hints and a Google-style docstring each); a call's result is inserted and the model goes on. train(tools=...) takes the functions themselves.")
    environment_factory: str | None = _f(None, "train(): dotted path to an environment class (one instance per episode: reset(**columns), then step(action) or tool methods, optional get_reward()), or to a dict of them by name. train(environment_factory=...) takes the class or dict itself.")
    environment_column: str = _f("environment", "train(): the prompt column naming each prompt's environment when environment_factory is a dict of them.")
    max_tool_calling_iterations: int | None = _f(None, "train(): most inserted turns (tool results or environment observations) per episode; None: no limit but max_new_tokens, which caps the model's and the inserted tokens together.")
    tool_timeout: float | None = _f(30.0, "train(): seconds a tool call or environment reset/step/get_reward may take; one that runs longer ends its episode (None: no limit).")
    output_dir: str = _f("runs/ppo", "Where train() writes checkpoints and metrics.")
    save_steps: int = _f(0, "train(): save a checkpoint every this many steps (0: only at the end).")

    def __post_init__(self):
        if self.optimize_cuda_cache is not None:
            self.optimize_device_cache = self.optimize_cuda_cache
        if self.forward_batch_size is not None:
            self.mini_batch_size = self.forward_batch_size
        positive = ("batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs", "ptx_batch_size")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError("PPOConfig", name, f"must be >= 1, got {getattr(self, name)}")
        backward = self.mini_batch_size * self.gradient_accumulation_steps
        self._replace_computed("backward_batch_size", backward, "mini_batch_size * gradient_accumulation_steps")
        if self.batch_size % self.backward_batch_size:
            raise ConfigError(
                "PPOConfig", "batch_size",
                f"must be a multiple of mini_batch_size * gradient_accumulation_steps = {self.mini_batch_size} * "
                f"{self.gradient_accumulation_steps} = {self.backward_batch_size}, got {self.batch_size}; change one "
                "of them")
        if self.kl_penalty not in KL_PENALTIES:
            raise ConfigError("PPOConfig", "kl_penalty", f"must be one of {KL_PENALTIES}, got {self.kl_penalty!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError("PPOConfig", "mixed_precision",
                              f"must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ConfigError("PPOConfig", "dual_clip", f"must be > 1 (e.g. 3.0), got {self.dual_clip}")
        check_padding_free(Checks(self))
        self._check_multi_turn()
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError("PPOConfig", "optimizer", f"must be 'adam' or 'adamw', got {self.optimizer!r}")
        from .trackers import missing_tracker_problem

        requested = isinstance(self.log_with, str) and self.log_with != field_default(type(self), "log_with")
        problem = missing_tracker_problem(self.log_with, "log_with") if requested else None
        if problem:
            raise ConfigError("PPOConfig", "log_with", problem)
        if self.use_score_norm and not self.use_score_scaling:
            # Classic configs set it alone and it was silently ignored; keep them running.
            warnings.warn("PPOConfig.use_score_norm has no effect without use_score_scaling=True", stacklevel=2)
        warn_ignored(self, stacklevel=4)

    def _check_multi_turn(self) -> None:
        """The multi-turn fields' types and ranges (the online trainers' rules)."""
        tools = self.tools
        if tools is not None and (not isinstance(tools, (list, tuple)) or
                                  not all(isinstance(t, str) and t.strip() for t in tools)):
            raise ConfigError("PPOConfig", "tools", f"must be a list of dotted paths 'package.module:function', got "
                                                    f"{tools!r}; pass the functions themselves as train(tools=...)")
        if self.environment_factory is not None and not (isinstance(self.environment_factory, str)
                                                         and self.environment_factory.strip()):
            raise ConfigError("PPOConfig", "environment_factory",
                              f"must be a dotted path 'package.module:Class', got {self.environment_factory!r}; pass "
                              "the class (or dict) itself as train(environment_factory=...)")
        if not isinstance(self.environment_column, str) or not self.environment_column:
            raise ConfigError("PPOConfig", "environment_column", f"must be a column name, got "
                                                                 f"{self.environment_column!r}")
        n = self.max_tool_calling_iterations
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ConfigError("PPOConfig", "max_tool_calling_iterations", f"must be an integer >= 0 or None, got {n!r}")
        t = self.tool_timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
            raise ConfigError("PPOConfig", "tool_timeout", f"must be a number of seconds > 0 or None, got {t!r}")

    def _replace_computed(self, name: str, value, how: str) -> None:
        """Set a computed classic field; a different value given by hand is replaced, with a warning (the
        value a resolved config.yaml holds is the computed one, so re-using that file warns about nothing)."""
        given = getattr(self, name)
        if given is not None and given != value:
            warnings.warn(f"PPOConfig.{name}={given!r} has no effect: it is computed ({how} = {value!r}); leave it "
                          "unset", UserWarning, stacklevel=4)
        setattr(self, name, value)

    def set_computed(self, *, world_size: int, is_encoder_decoder: bool, is_peft_model: bool) -> None:
        """The fields PPOTrainer sets from the processes and the model (warning about differing hand-set values)."""
        self._replace_computed("world_size", world_size, "the number of processes")
        self._replace_computed("global_backward_batch_size", self.backward_batch_size * world_size,
                               "backward_batch_size * world_size")
        self._replace_computed("global_batch_size", self.batch_size * world_size, "batch_size * world_size")
        self._replace_computed("is_encoder_decoder", is_encoder_decoder, "from the model")
        self._replace_computed("is_peft_model", is_peft_model, "from the model")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

