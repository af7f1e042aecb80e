"""KTO: alignment from unpaired thumbs-up / thumbs-down feedback, on the training loop (``loop.TrainLoop``).

    KTOTrainer(model="runs/sft", args=KTOConfig(output_dir="runs/kto", beta=0.1),
               train_dataset="data/feedback.jsonl").train()

Rows are ``{prompt, completion, label}`` (label true: desirable), or preference pairs, which
become one desirable and one undesirable row each (``data.to_unpaired_preference``, as TRL).
Each batch runs the policy and the reference on its rows and, without gradients, on
MISMATCHED rows: prompt i with the completion of row i - 1 of the same batch. Their mean
log-ratio, clamped at 0, is KTO's reference point z0 (``algos.kto``). With
``precompute_ref_log_probs`` the mismatched pairing is fixed once over the whole dataset
(a seeded random other row), so the reference log-probs of both can be cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import data
from ..algos.kto import KTO_LOSSES, USES_KL, kto_kl
from ..data.collate import UnpairedCollator
from ..data.convert import to_unpaired_preference
from ..data.tokenize import TRUNCATION_MODES
from ..models import reference_context
from .config import Checks, LoopConfig, f
from .logps import completion_logps
from .loop import TrainLoop
from .setup import check_run, finish_training, load_model_and_tokenizer, load_reference, load_split

SIDES = {"chosen": True, "rejected": False}  # TRL's metric names for desirable / undesirable rows


@dataclass
class KTOConfig(LoopConfig):
    output_dir: str = f("runs/kto", "Folder for the final model, checkpoints and metrics.jsonl.")
    learning_rate: float = f(1e-6, "Peak learning rate (KTO, like DPO, wants small steps).")
    max_length: int = f(1024, "Longest tokenized prompt + completion; longer rows are truncated (completion first, "
                              "then the prompt from the left).")
    max_prompt_length: int | None = f(512, "Longest tokenized prompt, cut before max_length applies (see "
                                           "truncation_mode); none: no separate limit.")
    truncation_mode: str = f("keep_end", f"Which end of a too-long prompt to keep, one of {TRUNCATION_MODES}.")
    beta: float = f(0.1, "Inverse temperature of the implicit reward beta * log(pi / pi_ref): larger stays closer "
                         "to the reference.")
    loss_type: str = f("kto", "kto (Ethayarajh et al. 2024) or apo_zero_unpaired (D'Oosterlinck et al. 2024; no "
                              "reference point, so no mismatched forward passes).")
    desirable_weight: float = f(1.0, "Weight of the desirable rows' losses; with unequal class counts KTO's paper "
                                     "suggests desirable_weight * n_desirable / (undesirable_weight * "
                                     "n_undesirable) in [1, 4/3].")
    undesirable_weight: float = f(1.0, "Weight of the undesirable rows' losses (see desirable_weight).")
    ref_model_name_or_path: str | None = f(None, "Reference model; default a frozen copy of the starting model "
                                                 "(or the adapter-disabled base under PEFT).")
    precompute_ref_log_probs: bool = f(False, "Score the dataset with the reference once before training (cached "
                                              "in output_dir) and free the reference model; the mismatched (KL) "
                                              "pairs are then fixed once per dataset instead of drawn per batch.")
    disable_dropout: bool = f(True, "Turn dropout off in the policy and the reference (TRL's default), so both see "
                                    "the same network and z0 is exactly 0 before the first update.")

    def __post_init__(self):
        super().__post_init__()
        c = Checks(self)
        c.choice("loss_type", sorted(KTO_LOSSES))
        c.choice("truncation_mode", TRUNCATION_MODES)
        c.positive("beta")
        c.at_least(0.0, "desirable_weight", "undesirable_weight")
        if self.desirable_weight == 0 and self.undesirable_weight == 0:
            c.fail("undesirable_weight", "and desirable_weight are both 0: nothing would be learned")
        c.at_least(1, "max_prompt_length")
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            c.fail("max_prompt_length", f"must be < max_length ({self.max_length}) so completions keep tokens, got "
                                        f"{self.max_prompt_length}")
        if self.loss_type in USES_KL:
            for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
                if getattr(self, name) < 2:
                    c.fail(name, f"must be >= 2 for loss_type={self.loss_type!r}: the KL reference point pairs "
                                 "each prompt with another row's completion of the batch (with 1 row it would be "
                                 "the row's own reward)")
        c.non_empty("ref_model_name_or_path")


def kl_view(batch: dict) -> dict:
    """The mismatched half of a KTO batch under the names ``completion_logps`` reads."""
    return {k: batch[f"kl_{k}"] for k in ("input_ids", "attention_mask", "labels", "prompt_lengths")}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values[mask]``; NaN when the batch has no such row (the loop's log drops non-finite values)."""
    return values[mask].mean() if mask.any() else values.new_tensor(math.nan)


def _disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def check_balance(labels: list[bool], config: KTOConfig, where: str) -> None:
    """Warn (as TRL) when one class is missing, or when the class weights do not offset unequal counts."""
    n_good = sum(labels)
    n_bad = len(labels) - n_good
    if n_good == 0 or n_bad == 0:
        missing = "undesirable (label false)" if n_bad == 0 else "desirable (label true)"
        warnings.warn(f"{where}: all {len(labels)} rows are {'desirable' if n_bad == 0 else 'undesirable'}; there "
                      f"are no {missing} rows, so KTO only moves log-ratios relative to the KL reference point. Add "
                      "rows of the other class (or use preference pairs, which give both)", UserWarning, stacklevel=3)
        return
    if n_good == n_bad:
        return
    # Eq. (8) of the KTO paper: desirable_weight * n_good / (undesirable_weight * n_bad) in [1, 4/3]
    ratio = n_bad * config.undesirable_weight / n_good
    d_low, d_high = round(ratio, 2), round(ratio * 1.33, 2)
    inv = n_good * config.desirable_weight / n_bad
    u_low, u_high = round(inv / 1.33, 2), round(inv, 2)
    if not (d_low <= config.desirable_weight <= d_high or u_low <= config.undesirable_weight <= u_high):
        warnings.warn(f"{where}: {n_good} desirable and {n_bad} undesirable rows, but desirable_weight="
                      f"{config.desirable_weight} and undesirable_weight={config.undesirable_weight} do not offset "
                      f"the imbalance; set EITHER desirable_weight in [{d_low}, {d_high}] OR undesirable_weight in "
                      f"[{u_low}, {u_high}] (KTO paper, eq. 8)", UserWarning, stacklevel=3)


class KTOTrainer:
    """``KTOTrainer(model, ref_model=None, args, train_dataset, eval_dataset, processing_class)``, TRL 1.x style."""

    def __init__(self, model=None, ref_model=None, args: KTOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None):
        self.args = args = args or KTOConfig()
        check_run(args)
        if ref_model is not None and ref_model is model and not isinstance(model, str):
            raise ValueError("ref_model is the very model being trained; pass a copy (or None for a frozen copy "
                             "made for you)")
        train, evals = load_split(train_dataset, eval_dataset, args, to_unpaired_preference)  # before the model
        check_balance(train["label"], args, data.source_name(train))
        self.model, self.tokenizer = load_model_and_tokenizer(model, processing_class, args)
        self.uses_kl = args.loss_type in USES_KL
        self.ref_model = load_reference(self.model, ref_model, args)  # as DPO: copy, PEFT base or a folder
        if args.disable_dropout:
            for m in (self.model, self.ref_model):
                if m is not None:
                    _disable_dropout(m)
        self.train_dataset = self._prepare(train, "train")
        self.eval_dataset = self._prepare(evals, "eval") if evals is not None else None
        if args.precompute_ref_log_probs:
            self.ref_model = None  # every row carries its reference log-probs now
        self.loop = TrainLoop(args, self.model, self.train_dataset, self._collate, self._step,
                              eval_dataset=self.eval_dataset, eval_fn=self._evaluate, tokenizer=self.tokenizer)
        if self.ref_model is not None:
            self.ref_model.to(self.loop.accelerator.device)

    def _reference_context(self):
        """Under PEFT without a separate reference, the base model (adapter off) is the reference."""
        return reference_context(self.model, self.ref_model)

    # ------------------------------------------------------------------ data
    def _prepare(self, rows, split: str):
        cfg = self.args
        tokenized = data.tokenize_dataset(rows, self.tokenizer, cfg.max_length, kind="unpaired",
                                          max_prompt_length=cfg.max_prompt_length,
                                          truncation_mode=cfg.truncation_mode)
        if not cfg.precompute_ref_log_probs:
            return tokenized
        if self.uses_kl:  # fix the mismatched pairs: row perm[k] takes the completion of row perm[k - 1]
            perm = torch.randperm(len(tokenized), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
            partner = [0] * len(perm)
            for k, row in enumerate(perm):
                partner[row] = perm[k - 1]
            completions = tokenized["completion_ids"]
            tokenized = tokenized.add_column("kl_completion_ids", [completions[j] for j in partner])
        ref, ref_kl = self._precomputed_ref_logps(tokenized, split)
        tokenized = tokenized.add_column("ref_logps", ref)
        return tokenized.add_column("ref_kl_logps", ref_kl) if ref_kl is not None else tokenized

    def _collate(self, rows):
        batch = UnpairedCollator(self.tokenizer.pad_token_id, self.args.max_length, kl=self.uses_kl)(rows)
        if "ref_logps" in rows[0]:
            batch["ref_logps"] = torch.tensor([r["ref_logps"] for r in rows], dtype=torch.float32)  # (B,)
            if self.uses_kl:
                batch["ref_kl_logps"] = torch.tensor([r["ref_kl_logps"] for r in rows], dtype=torch.float32)
        return batch

    @torch.no_grad()
    def _precomputed_ref_logps(self, tokenized, split: str):
        """Reference log-probs of every row (and of its mismatched pair), cached by dataset fingerprint."""
        cfg = self.args
        key = hashlib.sha256(json.dumps([tokenized._fingerprint, str(cfg.ref_model_name_or_path), cfg.loss_type,
                                         getattr(self.model.config, "_name_or_path", "")]).encode()).hexdigest()[:16]
        cache = Path(cfg.output_dir) / "ref_logps" / f"kto-{split}-{key}.safetensors"
        if cache.exists():
            saved = load_file(cache)
            return saved["ref"].tolist(), saved["ref_kl"].tolist() if "ref_kl" in saved else None
        loader = torch.utils.data.DataLoader(tokenized, batch_size=cfg.per_device_eval_batch_size,
                                             collate_fn=self._collate)
        model = self.ref_model or self.model
        device = next(model.parameters()).device
        ref, ref_kl = [], []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with self._reference_context():
                ref.append(completion_logps(model, batch)[0].float().cpu())
                if self.uses_kl:
                    ref_kl.append(completion_logps(model, kl_view(batch))[0].float().cpu())
        saved = {"ref": torch.cat(ref)} | ({"ref_kl": torch.cat(ref_kl)} if self.uses_kl else {})
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file(saved, str(cache))
        return saved["ref"].tolist(), saved["ref_kl"].tolist() if self.uses_kl else None

    # ------------------------------------------------------------------ loss
    def _forward(self, model, batch):
        """(loss, per-row rewards / logps / mean logits (B,), labels (B,), z0 ())."""
        cfg = self.args
        seq, n_tokens, _, _, mean_logits = completion_logps(model, batch)  # (B,) summed over each completion
        labels = batch["label"]  # (B,) bool
        ref, ref_kl = batch.get("ref_logps"), batch.get("ref_kl_logps")
        if ref is None:
            with torch.no_grad(), self._reference_context():
                reference = self.ref_model or model
                ref = completion_logps(reference, batch)[0]  # (B,)
                if self.uses_kl:
                    ref_kl = completion_logps(reference, kl_view(batch))[0]  # (B,)
        loss_fn = KTO_LOSSES[cfg.loss_type]
        weights = dict(desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)
        if self.uses_kl:
            with torch.no_grad():  # the reference point carries no gradient: no graph for its forward
                policy_kl = completion_logps(model, kl_view(batch))[0]  # (B,)
            kl = kto_kl(policy_kl, ref_kl.to(policy_kl.dtype))  # ()
            if self.loop.accelerator.num_processes > 1:
                kl = self.loop.accelerator.reduce(kl, "mean")  # TRL: the mean over processes, then the clamp
            losses, rewards, z0 = loss_fn(seq, ref.to(seq.dtype), labels, kl, cfg.beta, **weights)
        else:
            losses, rewards = loss_fn(seq, ref.to(seq.dtype), labels, cfg.beta, **weights)
            z0 = seq.new_zeros(())  # TRL logs kl = 0 for losses without a reference point
        return losses.mean(), rewards, seq.detach(), mean_logits * n_tokens, n_tokens, labels, z0

    def _losses(self, model, batch):
        """Loss and TRL 1.16's per-batch metrics: class means of rewards and logps, token means of logits."""
        loss, rewards, logps, logit_sums, n_tokens, labels, z0 = self._forward(model, batch)
        metrics = {"kl": z0}
        for side, flag in SIDES.items():
            mask = labels == flag
            metrics[f"rewards/{side}"] = _masked_mean(rewards, mask)
            metrics[f"logps/{side}"] = _masked_mean(logps, mask)
            metrics[f"logits/{side}"] = logit_sums[mask].sum() / n_tokens[mask].sum() if mask.any() else \
                logit_sums.new_tensor(math.nan)
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        return loss, metrics

    def _step(self, model, batch):
        return self._losses(model, batch)

    def _evaluate(self, model, loader, accelerator) -> dict:
        """Every metric averaged over the batches that have it (a class-less batch has no rewards/<class>), as TRL."""
        sums, counts = {}, {}
        for batch in loader:
            loss, metrics = self._losses(model, batch)
            for k, v in {"loss": loss, **metrics}.items():
                v = v.detach().double()
                finite = torch.isfinite(v)
                sums[k] = sums.get(k, 0.0) + torch.where(finite, v, 0.0)
                counts[k] = counts.get(k, 0.0) + finite.double()
        out = {}
        for k in sums:
            total, n = accelerator.reduce(sums[k], "sum").item(), accelerator.reduce(counts[k], "sum").item()
            if n:
                out[k] = total / n
        return out

    # ------------------------------------------------------------------ public face
    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        return finish_training(self, "kto", self.loop.train(resume_from_checkpoint))

    def evaluate(self) -> dict:
        return self.loop.evaluate()

    def save_model(self, path=None) -> None:
        self.loop.save_model(path or self.args.output_dir)
