"""Direct preference optimisation and its family, on the training loop (``loop.TrainLoop``).

    DPOTrainer(model="runs/sft", args=DPOConfig(output_dir="runs/dpo", beta=0.1, loss_type="sigmoid"),
               train_dataset="data/prefs.jsonl").train()

Chosen and rejected go through the model in ONE forward pass (a 2B batch), and the LM head
only sees positions that predict completion tokens (``rollout.token_logprobs``), so prompt tokens
cost no vocabulary projection. With ``padding_free`` the 2B sequences run packed, without padding
(``rollout.packing``). The reference is a frozen copy, the adapter-disabled base
under PEFT, a separate model, nothing (SimPO, ORPO), or log-probs precomputed once over
the dataset and cached on disk so no reference model stays in memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import algos, data
from ..models import reference_context, shared_prompt_forward, supports_shared_prompt
from ..rollout import keep_kwargs, packed_token_logprobs, require_padding_free
from .config import MAX_PACKED_LENGTH_HELP, PADDING_FREE_HELP, Checks, LoopConfig, check_padding_free, f
from .logps import completion_logps
from .loop import TrainLoop
from .setup import check_run, finish_training, load_model_and_tokenizer, load_reference, load_split


SMOOTHED = ("sigmoid", "robust", "simpo")  # the losses that take label_smoothing


@dataclass
class DPOConfig(LoopConfig):
    output_dir: str = f("runs/dpo", "Folder for the final model, checkpoints and metrics.jsonl.")
    learning_rate: float = f(1e-6, "Peak learning rate (DPO wants small steps).")
    beta: float = f(0.1, "Inverse temperature of the implicit reward: larger stays closer to the reference.")
    loss_type: str = f("sigmoid", "One of sigmoid (DPO), ipo, hinge (SLiC), robust, simpo, orpo.")
    label_smoothing: float = f(0.0, "Assumed label-noise rate for sigmoid (cDPO), robust and simpo.")
    gamma_beta_ratio: float = f(0.5, "SimPO's target margin divided by beta.")
    rpo_alpha: float | None = f(None, "Weight of an NLL (SFT) term on the chosen completion (RPO, Pang et al. 2024).")
    ref_model_name_or_path: str | None = f(None, "Reference model; default a frozen copy of the starting model "
                                                 "(or the adapter-disabled base under PEFT).")
    precompute_ref_log_probs: bool = f(False, "Score the dataset with the reference once before training (cached "
                                              "in output_dir) and free the reference model.")
    share_prompt: bool = f(True, "Run each prompt once and chosen/rejected on its cached keys/values, for the policy "
                                 "and the reference (same loss and gradients, less work); off under gradient "
                                 "checkpointing, with padding_free or for models without a KV cache.")
    padding_free: bool = f(False, PADDING_FREE_HELP)
    max_packed_length: int | None = f(None, MAX_PACKED_LENGTH_HELP)

    def __post_init__(self):
        super().__post_init__()
        c = Checks(self)
        c.choice("loss_type", sorted(algos.DPO_LOSSES))
        c.positive("beta")
        c.at_least(0.0, "gamma_beta_ratio", "rpo_alpha")
        # cDPO/robust divide by (1 - 2 eps): at 0.5 the labels carry no information
        c.within("label_smoothing", 0.0, 0.5, high_open=True)
        if self.label_smoothing and self.loss_type not in SMOOTHED:
            c.fail("label_smoothing", f"is used by loss_type {', '.join(SMOOTHED)} only; loss_type="
                                      f"{self.loss_type!r} would ignore it (set it to 0)")
        c.non_empty("ref_model_name_or_path")
        check_padding_free(c, self.max_length, "max_length")


def packed_completion_logps(model, batch, max_packed_length: int | None = None):
    """:func:`completion_logps` from a padding-free forward of the same batch (``rollout.packing``).

    Only the completion tokens reach the LM head; their log-probs come back per sequence as segment
    sums and per token in the (2B, K) layout of :func:`completion_logps` (0 off the completions).
    """
    labels = batch["labels"]  # (2B, T), -100 on prompt and padding
    T = labels.shape[1]
    K = T - int(batch["prompt_lengths"].min())
    targets = labels[:, T - K:]  # (2B, K)
    scored = targets != data.IGNORE_INDEX  # (2B, K)
    out = packed_token_logprobs(model, batch["input_ids"][:, :-1], targets.clamp_min(0),
                                batch["attention_mask"][:, :-1], scored=scored, max_packed_length=max_packed_length,
                                where="the DPO forward")
    mask = scored.float()
    mean_logits = out.means(out.logits.detach().mean(-1))  # (2B,): mean over completion tokens of the vocab mean
    return out.sums(out.token_logprobs), mask.sum(-1), out.logprobs, mask, mean_logits


def shared_completion_logps(model, batch):
    """:func:`completion_logps` from the prompt-once layout (``PairCollator(split_prompt=True)``).

    The prompt pass keeps only its last position's logits (left padding puts every prompt's last
    token there): they predict the first completion token; the completion pass predicts the rest.
    Log-probs of the two parts are joined, never the (2B, C, V) logits.
    """
    c_ids, c_mask = batch["completion_input_ids"], batch["completion_attention_mask"]
    keep = keep_kwargs(model, 1, "the DPO prompt pass")
    prompt_out, out = shared_prompt_forward(model, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                            c_ids, c_mask, prompt_kwargs=keep)
    first = prompt_out.logits[:, -1:].repeat(2, 1, 1)  # (2B, 1, V): predicts completion token 0
    rest = out.logits[:, :-1]  # (2B, C - 1, V): predict completion tokens 1..C-1
    logprobs = torch.cat([algos.logprobs_from_logits(first, c_ids[:, :1]),
                          algos.logprobs_from_logits(rest, c_ids[:, 1:])], dim=1)  # (2B, C)
    mask = c_mask.float()  # as completion_logps
    n_tokens = mask.sum(-1)  # (2B,)
    logit_sums = first.detach().mean(-1)[:, 0] * mask[:, 0] + (rest.detach().mean(-1) * mask[:, 1:]).sum(-1)
    mean_logits = logit_sums / n_tokens.clamp_min(1)  # (2B,)
    return algos.sequence_logprobs(logprobs, mask), n_tokens, logprobs, mask, mean_logits


def pair_logps(model, batch, padding_free: bool = False, max_packed_length: int | None = None):
    """Padding-free when asked; else prompt-once when the batch carries that layout and has prompts, else the
    concatenated forward."""
    if padding_free:
        return packed_completion_logps(model, batch, max_packed_length)
    if "completion_input_ids" in batch and batch["prompt_input_ids"].shape[1] > 0:
        return shared_completion_logps(model, batch)
    return completion_logps(model, batch)


class DPOTrainer:
    """``DPOTrainer(model, ref_model=None, args, train_dataset, eval_dataset, processing_class)``, TRL 1.x style."""

    def __init__(self, model=None, ref_model=None, args: DPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None):
        self.args = args = args or DPOConfig()
        check_run(args)
        train, evals = load_split(train_dataset, eval_dataset, args, data.to_preference_pairs)  # before the model
        self.model, self.tokenizer = load_model_and_tokenizer(model, processing_class, args)
        self.reference_free = args.loss_type in algos.REFERENCE_FREE
        self.average = args.loss_type in algos.LENGTH_NORMALISED
        self.ref_model = None if self.reference_free else load_reference(self.model, ref_model, args)
        self.share_prompt = args.share_prompt and not args.gradient_checkpointing and not args.padding_free and \
            supports_shared_prompt(self.model)
        if args.padding_free:  # before any step: a model whose attention crosses the packed sequences is refused
            for m in (self.model, self.ref_model):
                if m is not None:
                    require_padding_free(m)
        self.train_dataset = self._prepare(train, "train")
        self.eval_dataset = self._prepare(evals, "eval") if evals is not None else None
        if args.precompute_ref_log_probs and self.ref_model is not None:
            self.ref_model = None  # every row carries its reference log-probs now
        self.loop = TrainLoop(args, self.model, self.train_dataset, self._collate, self._step,
                              eval_dataset=self.eval_dataset, eval_fn=self._evaluate, tokenizer=self.tokenizer)
        if self.ref_model is not None:
            self.ref_model.to(self.loop.accelerator.device)

    def _prepare(self, pairs, split: str):
        tokenized = data.tokenize_dataset(pairs, self.tokenizer, self.args.max_length, kind="pair")
        if self.args.precompute_ref_log_probs and not self.reference_free:
            chosen, rejected = self._precomputed_ref_logps(tokenized, split)
            tokenized = tokenized.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)
        return tokenized

    def _collate(self, rows):
        batch = data.PairCollator(self.tokenizer.pad_token_id, split_prompt=self.share_prompt)(rows)
        if "ref_chosen_logps" in rows[0]:
            batch["ref_logps"] = torch.tensor([r["ref_chosen_logps"] for r in rows] +
                                              [r["ref_rejected_logps"] for r in rows], dtype=torch.float32)
        return batch

    @torch.no_grad()
    def _precomputed_ref_logps(self, tokenized, split: str):
        """Reference log-probs of every row, computed once and cached by dataset fingerprint."""
        key = hashlib.sha256(json.dumps([tokenized._fingerprint, str(self.args.ref_model_name_or_path),
                                         getattr(self.model.config, "_name_or_path", "")]).encode()).hexdigest()[:16]
        cache = Path(self.args.output_dir) / "ref_logps" / f"{split}-{key}.safetensors"
        if cache.exists():
            saved = load_file(cache)
            return saved["chosen"].tolist(), saved["rejected"].tolist()
        loader = torch.utils.data.DataLoader(tokenized, batch_size=self.args.per_device_eval_batch_size,
                                             collate_fn=data.PairCollator(self.tokenizer.pad_token_id))
        chosen, rejected = [], []
        for batch in loader:
            with self._reference_context():
                seq, *_ = self._logps(self.ref_model or self.model, batch)
            half = len(seq) // 2
            chosen.append(seq[:half].float().cpu())
            rejected.append(seq[half:].float().cpu())
        chosen, rejected = torch.cat(chosen), torch.cat(rejected)
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"chosen": chosen, "rejected": rejected}, str(cache))
        return chosen.tolist(), rejected.tolist()

    def _reference_context(self):
        """Under PEFT without a separate reference, the base model (adapter off) is the reference."""
        return reference_context(self.model, self.ref_model)

    def _logps(self, model, batch):
        return pair_logps(model, batch, self.args.padding_free, self.args.max_packed_length)

    def _losses(self, model, batch):
        cfg = self.args
        seq, n_tokens, logprobs, mask, mean_logits = self._logps(model, batch)  # sums over completions
        B = seq.shape[0] // 2
        norm = n_tokens.clamp_min(1) if self.average else torch.ones_like(n_tokens)  # IPO, SimPO, ORPO: per token
        chosen, rejected = seq[:B] / norm[:B], seq[B:] / norm[B:]
        if self.reference_free:
            extra = dict(beta=cfg.beta) if cfg.loss_type == "orpo" else \
                dict(beta=cfg.beta, gamma_beta_ratio=cfg.gamma_beta_ratio, label_smoothing=cfg.label_smoothing)
            losses, r_c, r_r = algos.DPO_LOSSES[cfg.loss_type](chosen, rejected, **extra)
        else:
            ref = batch.get("ref_logps")
            if ref is None:
                with torch.no_grad(), self._reference_context():
                    ref, *_ = self._logps(self.ref_model or model, batch)
            extra = dict(label_smoothing=cfg.label_smoothing) if cfg.loss_type in ("sigmoid", "robust") else {}
            losses, r_c, r_r = algos.DPO_LOSSES[cfg.loss_type](chosen, rejected, ref[:B] / norm[:B],
                                                               ref[B:] / norm[B:], cfg.beta, **extra)
            # implicit rewards are reported from summed log-ratios, also for IPO (as TRL 1.16 logs them)
            r_c, r_r = cfg.beta * (seq[:B] - ref[:B]).detach(), cfg.beta * (seq[B:] - ref[B:]).detach()
        weight = batch["weight"].to(losses.dtype)
        loss = (losses * weight).sum() / weight.sum().clamp_min(1e-8)
        nll = -(logprobs[:B] * mask[:B]).sum() / mask[:B].sum().clamp_min(1)  # token mean over chosen completions
        if cfg.loss_type == "orpo":
            loss = loss + nll
        elif cfg.rpo_alpha:
            loss = loss + cfg.rpo_alpha * nll
        metrics = {"rewards/chosen": r_c.mean(), "rewards/rejected": r_r.mean(),
                   "rewards/accuracies": (r_c > r_r).float().mean(), "rewards/margins": (r_c - r_r).mean(),
                   "logps/chosen": seq[:B].detach().mean(), "logps/rejected": seq[B:].detach().mean(),
                   "logits/chosen": mean_logits[:B].mean(), "logits/rejected": mean_logits[B:].mean(),
                   "nll_loss": nll.detach()}
        return loss, metrics

    def _step(self, model, batch):
        return self._losses(model, batch)

    def _evaluate(self, model, loader, accelerator) -> dict:
        sums, n = {}, 0
        for batch in loader:
            loss, metrics = self._losses(model, batch)
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + accelerator.reduce(v.detach().float(), "mean").item()
            n += 1
        return {k: v / max(n, 1) for k, v in sums.items()}

    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        return finish_training(self, "dpo", self.loop.train(resume_from_checkpoint))

    def evaluate(self) -> dict:
        return self.loop.evaluate()

    def save_model(self, path=None) -> None:
        self.loop.save_model(path or self.args.output_dir)
