"""Configs of ``rlhfkit compare`` and ``rlhfkit demo``: flat dataclasses, each field documented once.

``MethodsConfig`` holds what PPO and DPO are run and evaluated with (shared by both
commands, by dataclass field inheritance, data only); ``CompareConfig`` adds the paths of
the inputs; ``PipelineConfig`` adds the sizes of every stage of the offline demo.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, fields

import torch

from ..trainers.config import Checks, check_field_types, f


@dataclass
class MethodsConfig:
    output_dir: str = f("runs/compare", "Folder for every stage's outputs, the report and config.yaml.")
    seed: int = f(0, "Seed of every stage (data, initialisation, sampling).")
    budget: int = f(1920, "Training examples per method: PPO rollouts (steps * ppo_batch_size) and DPO pairs "
                          "(steps * dpo_batch_size), so both see the same amount of data.")
    max_new_tokens: int = f(32, "Longest response, in tokens, for PPO rollouts and evaluation samples.")
    # ---- PPO ----
    ppo_batch_size: int = f(32, "PPO rollouts per step.")
    ppo_mini_batch_size: int = f(16, "PPO rollouts per gradient minibatch.")
    ppo_epochs: int = f(4, "PPO passes over each rollout batch.")
    ppo_learning_rate: float = f(5e-5, "PPO Adam learning rate.")
    ppo_init_kl_coef: float = f(0.2, "Coefficient of PPO's per-token KL penalty to the SFT model.")
    ppo_adap_kl_ctrl: bool = f(False, "Adapt the KL coefficient towards ppo_target_kl (else keep it fixed).")
    ppo_target_kl: float = f(6.0, "Target KL (nats per response) of the adaptive controller.")
    ppo_kl_penalty: str = f("kl", "Per-token KL estimator in PPO's reward: kl (k1), abs, mse (k2), k3, full.")
    # ---- DPO ----
    dpo_batch_size: int = f(16, "DPO pairs per step.")
    dpo_learning_rate: float = f(5e-5, "DPO AdamW learning rate (peak, linear decay after 10% warm-up).")
    dpo_beta: float = f(0.1, "DPO beta (larger stays closer to the SFT model).")
    dpo_loss_type: str = f("sigmoid", "DPO-family loss: sigmoid (DPO), ipo, hinge, robust, simpo, orpo.")
    # ---- evaluation ----
    eval_samples_per_prompt: int = f(16, "Responses per held-out prompt and policy in the final evaluation.")
    curve_points: int = f(5, "Checkpoints per method evaluated for the reward/KL-over-steps plots (0: none).")
    curve_samples_per_prompt: int = f(4, "Responses per held-out prompt at each curve checkpoint.")
    kl_estimator: str = f("k3", "Per-token KL estimator summed over each evaluated response (k1, k2, k3, abs).")
    keep_checkpoints: bool = f(False, "Keep the curve checkpoints (optimiser state included) after evaluating them.")
    num_threads: int = f(0, "PyTorch CPU threads. 0: automatic, 1 when the 1-minute load average is already >= 1 "
                            "at the start (another job holds a core; two threads would wait on each other and run "
                            "several times slower), else PyTorch's default (one per core).")

    def __post_init__(self):
        check_field_types(self)
        c = Checks(self)
        c.at_least(1, "budget", "max_new_tokens", "ppo_batch_size", "ppo_mini_batch_size", "ppo_epochs",
                   "dpo_batch_size", "eval_samples_per_prompt", "curve_samples_per_prompt")
        c.at_least(0, "curve_points", "num_threads", "ppo_init_kl_coef")
        c.positive("ppo_learning_rate", "dpo_learning_rate", "dpo_beta", "ppo_target_kl")
        c.choice("ppo_kl_penalty", ("kl", "abs", "mse", "k2", "k3", "full"))
        c.choice("dpo_loss_type", ("sigmoid", "ipo", "hinge", "robust", "simpo", "orpo"))
        c.choice("kl_estimator", ("kl", "k1", "abs", "mse", "k2", "k3"))
        c.non_empty("output_dir")
        if self.ppo_batch_size % self.ppo_mini_batch_size:
            c.fail("ppo_mini_batch_size", f"must divide ppo_batch_size ({self.ppo_batch_size}), got "
                                          f"{self.ppo_mini_batch_size}")
        least = max(self.ppo_batch_size, self.dpo_batch_size)
        if self.budget < least:
            c.fail("budget", f"must cover at least one batch of each method (>= {least}), got {self.budget}")

    @property
    def ppo_steps(self) -> int:
        return self.budget // self.ppo_batch_size

    @property
    def dpo_steps(self) -> int:
        return self.budget // self.dpo_batch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {x.name: x.metadata.get("help", "") for x in fields(cls)}


@dataclass
class CompareConfig(MethodsConfig):
    policy: str | None = f(None, "The SFT policy folder: the start of both methods and the KL reference.")
    reward_model: str | None = f(None, "Reward-model folder that PPO optimises and the evaluation reports.")
    pairs: str | None = f(None, "Preference pairs (prompt, chosen, rejected) for DPO.")
    prompts: str | None = f(None, "PPO's training prompts (.txt, one per line, or a file with a 'prompt' column); "
                                  "default: the prompts of the pairs.")
    eval_prompts: str | None = f(None, "Held-out prompts for the evaluation (same forms as prompts); default: the "
                                       "training prompts.")
    reward_fn: str | None = f(None, "Optional second scorer 'module:function' for the evaluation, e.g. a hidden "
                                    "true quality (rlhfkit.pipeline.corpus:true_quality).")
    reward_fn_name: str = f("hidden quality", "Name of reward_fn in tables and plots.")
    extra_policies: str | None = f(None, "More policies to evaluate beside SFT/PPO/DPO, as name=path,... "
                                         "(e.g. base=runs/demo/base).")


@dataclass
class PipelineConfig(MethodsConfig):
    output_dir: str = f("runs/demo", "Folder for every stage's outputs, the report and config.yaml.")
    # ---- corpus, tokenizer and model ----
    vocab_size: int = f(600, "Size of the byte-level BPE vocabulary trained on the generated corpus.")
    hidden_size: int = f(128, "Width of the GPT-2-shaped model built from scratch.")
    num_layers: int = f(4, "Transformer blocks.")
    num_heads: int = f(4, "Attention heads.")
    train_batch_size: int = f(32, "Sequences per step of pre-training, SFT and reward-model training.")
    pretrain_texts: int = f(3000, "Generated 'web text' documents for pre-training (rock song is rare there).")
    pretrain_rock_share: float = f(0.1, "Share of rock-song completions in the pre-training texts.")
    pretrain_steps: int = f(400, "Pre-training steps (the result is the 'base' policy).")
    pretrain_learning_rate: float = f(3e-3, "Pre-training peak learning rate (cosine schedule).")
    sft_examples: int = f(2000, "Prompt-completion demonstrations for SFT.")
    sft_rock_share: float = f(0.3, "Share of rock-song demonstrations: SFT writes rock song now and then.")
    sft_steps: int = f(300, "SFT steps.")
    sft_learning_rate: float = f(1e-3, "SFT peak learning rate.")
    # ---- simulated feedback and calibration ----
    responses_per_prompt: int = f(16, "SFT samples per training prompt sent to the annotators.")
    annotators: int = f(6, "Simulated annotators.")
    annotator_offset_std: float = f(0.4, "Spread of the annotators' personal biases (rating points).")
    annotator_noise_std: float = f(0.3, "Noise of each rating (rating points).")
    ratings_per_response: int = f(2, "Annotators per response (overlap lets calibration estimate the biases).")
    calibration_shrinkage: float = f(2.0, "Pseudo-judgements pulling each annotator's offset towards 0.")
    min_gap: float = f(0.5, "Smallest calibrated score gap that makes a preference pair (near-ties dropped).")
    max_pairs_per_prompt: int = f(40, "Preference pairs kept per prompt (a seeded random subset).")
    heldout_prompts: int = f(4, "Training prompts whose pairs are held out to measure the reward model.")
    # ---- reward model ----
    rm_epochs: float = f(3.0, "Reward-model epochs over the training pairs.")
    rm_learning_rate: float = f(1e-3, "Reward-model peak learning rate.")

    def __post_init__(self):
        super().__post_init__()
        c = Checks(self)
        c.at_least(1, "vocab_size", "hidden_size", "num_layers", "num_heads", "train_batch_size", "pretrain_texts",
                   "pretrain_steps", "sft_examples", "sft_steps", "responses_per_prompt", "annotators",
                   "max_pairs_per_prompt")
        c.at_least(0, "annotator_offset_std", "annotator_noise_std", "calibration_shrinkage", "min_gap",
                   "heldout_prompts")
        c.positive("pretrain_learning_rate", "sft_learning_rate", "rm_learning_rate", "rm_epochs")
        if not 1 <= self.ratings_per_response <= self.annotators:
            c.fail("ratings_per_response", f"must be in [1, annotators={self.annotators}], got "
                                           f"{self.ratings_per_response}")
        for name in ("pretrain_rock_share", "sft_rock_share"):
            c.within(name, 0.0, 1.0)
        if self.hidden_size % self.num_heads:
            c.fail("num_heads", f"must divide hidden_size ({self.hidden_size}), got {self.num_heads}")

    def methods(self) -> dict:
        """The ``MethodsConfig`` fields of this config (to build a ``CompareConfig``)."""
        return {x.name: getattr(self, x.name) for x in fields(MethodsConfig)}


@contextlib.contextmanager
def torch_threads(num_threads: int):
    """PyTorch's CPU threads set from a ``num_threads`` field (see its help) inside the block, restored after.

    Yields the number used.
    """
    previous = torch.get_num_threads()
    n = num_threads
    if n <= 0:
        busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= 1.0
        n = 1 if busy else previous
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


# ``rlhfkit demo --quick``: small sizes for the test suite and a first look (well under a minute); it checks
# that every stage runs and writes its outputs, not that anything is learned.
QUICK = dict(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, train_batch_size=16, pretrain_texts=200,
             pretrain_steps=20, sft_examples=100, sft_steps=10, responses_per_prompt=4, min_gap=0.0,
             max_pairs_per_prompt=4, rm_epochs=1.0, budget=32, ppo_batch_size=16, ppo_mini_batch_size=8,
             ppo_epochs=1, dpo_batch_size=8, eval_samples_per_prompt=1, curve_points=2, curve_samples_per_prompt=1,
             max_new_tokens=12)
