"""Reward models from preference pairs, rankings or ratings.

Pairwise (Bradley–Terry, as in InstructGPT): ``loss = -w * log sigmoid(r_chosen - r_rejected - margin)``;
rankings become all their pairs and ratings become pairs within a prompt (ties dropped).
Regression: ratings as targets of a squared loss. The result is an
``AutoModelForSequenceClassification`` with ``num_labels=1`` that plain Transformers loads;
``rlhfkit.RewardModel(path)`` scores texts with it (and is a ``reward_fn`` for PPO).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from .. import data
from ..algos import bradley_terry_loss
from ..models.loading import ModelSourceError
from ..models.shared_prompt import shared_prompt_forward, supports_shared_prompt
from .config import Checks, LoopConfig, f
from .loop import TrainLoop
from .mechanics import shards_parameters
from .setup import check_run, finish_training, load_model_and_tokenizer, load_split


@dataclass
class RewardConfig(LoopConfig):
    output_dir: str = f("runs/reward", "Folder for the final model, checkpoints and metrics.jsonl.")
    learning_rate: float = f(1e-5, "Peak learning rate.")
    ratings_as: str = f("pairs", "Ratings data: 'pairs' (Bradley-Terry on pairs within a prompt, ties dropped) or "
                                 "'regression' (squared loss on the score).")
    use_margin: bool = f(True, "Subtract the row's margin (preference strength or rating gap) inside the sigmoid.")
    group_by_prompt: bool = f(False, "Batch all pairs of one prompt together (InstructGPT's ranking batches).")
    center_rewards_coefficient: float | None = f(None, "Add coef * mean((r_chosen + r_rejected)^2) to keep rewards "
                                                       "centred at 0 (Eisenstein et al. 2023).")
    share_prompt: bool = f(True, "Pairs: run each prompt once and score chosen and rejected on its cached keys/values "
                                 "(same loss and gradients, less work); off under gradient checkpointing or for models "
                                 "without a KV cache.")
    rating_threshold: float | None = f(None, "Ratings >= this count as 'good' for the accuracy/precision/recall/F1 "
                                             "of a regression reward model (e.g. 3 on a 1-3 scale).")

    def __post_init__(self):
        super().__post_init__()
        c = Checks(self)
        c.choice("ratings_as", ("pairs", "regression"))
        c.at_least(0.0, "center_rewards_coefficient")


def pair_rewards(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected), each (B,): one forward over the 2B concatenated rows, or, when the batch
    carries the split layout (``PairCollator(split_prompt=True)``), each prompt once + the 2B completions."""
    if "completion_input_ids" in batch and batch["prompt_input_ids"].shape[1] > 0:
        _, out = shared_prompt_forward(model, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                       batch["completion_input_ids"], batch["completion_attention_mask"])
        rewards = out.logits.squeeze(-1).float()
    else:
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1).float()
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


def classification_metrics(pred_good: torch.Tensor, true_good: torch.Tensor) -> dict:
    """Accuracy, precision, recall and F1 of boolean predictions (positive = good)."""
    tp = (pred_good & true_good).sum().item()
    fp = (pred_good & ~true_good).sum().item()
    fn = (~pred_good & true_good).sum().item()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (pred_good == true_good).float().mean().item(), "precision": precision, "recall": recall,
            "f1": f1}


class RewardTrainer:
    """``RewardTrainer(model, args, train_dataset, eval_dataset, processing_class)``, TRL 1.x style."""

    def __init__(self, model=None, args: RewardConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None):
        self.args = args = args or RewardConfig()
        check_run(args)
        self.objective = "regression" if args.ratings_as == "regression" else "pairwise"
        train, evals = load_split(train_dataset, eval_dataset, args, self._convert)  # data errors before the model
        self.model, self.tokenizer = load_model_and_tokenizer(model, processing_class, args,
                                                              AutoModelForSequenceClassification, "SEQ_CLS",
                                                              num_labels=1)
        if self.model.config.num_labels != 1:
            raise ModelSourceError(f"model_name_or_path: a reward model needs num_labels=1, the model has "
                                   f"{self.model.config.num_labels}; start from a causal LM or a 1-label classifier")
        self.train_dataset = self._prepare(train)
        self.eval_dataset = self._prepare(evals) if evals is not None else None
        pad = self.tokenizer.pad_token_id
        # (off under FSDP / ZeRO-3: their hooks cannot follow the KV cache between two forwards)
        self.share_prompt = (self.objective == "pairwise" and args.share_prompt and not args.gradient_checkpointing
                             and not shards_parameters() and supports_shared_prompt(self.model))
        collator = data.RatingCollator(pad) if self.objective == "regression" else \
            data.PairCollator(pad, split_prompt=self.share_prompt)
        sampler_fn = None
        if args.group_by_prompt and "group" in self.train_dataset.column_names:
            groups = self.train_dataset["group"]
            sampler_fn = lambda ds, seed: data.GroupedPairSampler(groups, args.per_device_train_batch_size, seed)  # noqa: E731
        step = self._regression_step if self.objective == "regression" else self._pairwise_step
        self.loop = TrainLoop(args, self.model, self.train_dataset, collator, step, eval_dataset=self.eval_dataset,
                              eval_fn=self._evaluate, tokenizer=self.tokenizer, sampler_fn=sampler_fn)

    def _convert(self, records, fmt):
        if self.objective == "pairwise":
            return data.to_preference_pairs(records, fmt)
        if fmt != "ratings":
            raise data.DataError(f"{data.source_name(records)}: ratings_as='regression' needs ratings rows "
                                 f"(prompt, response, score), got {fmt} rows")
        return data.to_regression(records)

    def _prepare(self, rows):
        if self.objective == "regression":
            return data.tokenize_dataset(rows, self.tokenizer, self.args.max_length, kind="rating")
        tokenized = data.tokenize_dataset(rows, self.tokenizer, self.args.max_length, kind="pair")
        if "group" in rows.column_names:
            tokenized = tokenized.add_column("group", rows["group"])
        return tokenized

    def _pairwise_step(self, model, batch):
        chosen, rejected = pair_rewards(model, batch)
        margin = batch["margin"] if self.args.use_margin else None
        loss, metrics = bradley_terry_loss(chosen, rejected, margin=margin, weight=batch.get("weight"))
        if self.args.center_rewards_coefficient:
            loss = loss + self.args.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
        return loss, metrics

    @staticmethod
    def _regression_step(model, batch):
        pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1).float()
        loss = F.mse_loss(pred, batch["score"].float())
        return loss, {"mae": (pred - batch["score"]).abs().mean().detach()}

    def _evaluate(self, model, loader, accelerator) -> dict:
        if self.objective == "pairwise":
            wins = []
            for batch in loader:
                chosen, rejected = pair_rewards(model, batch)
                wins.append(accelerator.gather_for_metrics(chosen > rejected))
            return {"accuracy": torch.cat(wins).float().mean().item()}
        preds, scores = [], []
        for batch in loader:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
            preds.append(accelerator.gather_for_metrics(out.float()))
            scores.append(accelerator.gather_for_metrics(batch["score"].float()))
        pred, score = torch.cat(preds), torch.cat(scores)
        metrics = {"mse": F.mse_loss(pred, score).item()}
        if self.args.rating_threshold is not None:
            thr = self.args.rating_threshold
            metrics.update(classification_metrics(pred >= thr, score >= thr))
        return metrics

    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        return finish_training(self, "reward", self.loop.train(resume_from_checkpoint))

    def evaluate(self) -> dict:
        return self.loop.evaluate()

    def save_model(self, path=None) -> None:
        self.loop.save_model(path or self.args.output_dir)
