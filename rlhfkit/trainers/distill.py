"""On-policy distillation (GKD) with TRL 1.x's names: ``DistillationConfig`` / ``DistillationTrainer``.

    trainer = DistillationTrainer(model="runs/student", teacher_model="runs/teacher",
                                  args=DistillationConfig(output_dir="runs/distill", lmbda=1.0, beta=1.0),
                                  train_dataset="data/prompts.jsonl")
    trainer.train()

Generalised Knowledge Distillation (Agarwal et al. 2024, arXiv:2306.13649): the student learns the
teacher's whole next-token distribution at every completion token, on completions the student
samples itself, so it is taught where its own mistakes lead it. One micro-batch of
B = ``per_device_train_batch_size`` prompts:

    on_policy  = u < lmbda,  u ~ U[0, 1) from the run's RNG (one draw per micro-batch, as TRL)
    completion = the student's samples         if on_policy
                 the teacher's samples         elif seq_kd (sequence-level KD)
                 the dataset's completions     else (prompt-completion or conversational rows)
    s, t       = student logits (with grad), teacher logits (no grad) at the completion tokens  (B, R, V)
    loss       = algos.generalized_jsd_loss(s, t, mask, beta, temperature)   token mean of the micro-batch

The teacher is a frozen causal LM with the student's vocabulary (eval mode, no gradients, never
in the optimiser); the student may be a LoRA adapter (``use_peft``). The loop is the shared one
(``loop.TrainLoop``: accumulation, clipping, schedule, logging, evaluation, checkpoints); sampling
draws from the run's RNG, which a checkpoint records at each optimiser step, so a resumed run
samples exactly what the uninterrupted run did. Evaluation samples the student on the held-out
prompts and reports the divergence there (``eval/loss``; ``eval/reverse_kl`` too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

from .. import data
from ..algos.distill import generalized_jsd_loss
from ..data.checks import clean_messages
from ..models.fused import fuse_activations
from ..models.loading import load_pretrained
from ..rollout import build_batch, response_forward
from ..rollout.evaluate import encode_prompts
from ..rollout.sampling import sample_responses
from .config import MODEL_DTYPES, Checks, ConfigError, LoopConfig, f, field_default
from .loop import TrainLoop
from .online_config import load_prompt_sets
from .setup import check_run, finish_training, load_model_and_tokenizer, model_dtype


@dataclass
class DistillationConfig(LoopConfig):
    output_dir: str = f("runs/distill", "Folder for the final model, checkpoints and metrics.jsonl.")
    learning_rate: float = f(1e-6, "Peak learning rate (TRL's DistillationTrainer default).")
    max_length: int = f(512, "Longest prompt + completion in tokens: with max_prompt_length none, prompts keep "
                             "their last max_length - max_completion_length tokens.")
    # ---- the teacher ----
    teacher_model_name_or_path: str | None = f(None, "The teacher: a local folder or hub id of a causal LM that "
                                                     "shares the student's tokenizer (vocabulary); frozen, never "
                                                     "trained. Required unless DistillationTrainer gets "
                                                     "teacher_model=.")
    teacher_model_revision: str | None = f(None, "Branch, tag or commit of a hub teacher (none: its default branch).")
    teacher_model_init_kwargs: dict | None = f(None, "More keyword arguments for the teacher's "
                                                     "AutoModelForCausalLM.from_pretrained (e.g. {dtype: bfloat16}); "
                                                     "by default it loads with the student's dtype, "
                                                     "attn_implementation and trust_remote_code.")
    # ---- the divergence ----
    lmbda: float = f(1.0, "Share of micro-batches trained on the student's own samples (on-policy), drawn per "
                          "micro-batch from the run's RNG; the others train on the dataset's completions (or, with "
                          "seq_kd, on the teacher's samples). 0: supervised KD on the dataset only.")
    beta: float = f(1.0, "Interpolation of the generalised Jensen-Shannon divergence: 0 forward KL(teacher, "
                         "student), 1 reverse KL(student, teacher), in between beta KL(teacher, M) + (1 - beta) "
                         "KL(student, M) with M = beta teacher + (1 - beta) student (0.5: JSD); KL(a, b) = sum_v a_v "
                         "log(a_v / b_v) over the vocabulary.")
    temperature: float = f(1.0, "Sampling temperature; both models' logits are divided by it in the loss too.")
    seq_kd: bool = f(False, "Sequence-level KD (Kim & Rush 2016): the off-policy micro-batches (1 - lmbda of them) "
                            "train on completions the teacher samples, instead of the dataset's.")
    disable_dropout: bool = f(True, "Turn dropout off in the student (TRL's default), so its samples and its loss "
                                    "come from the same network; the teacher always runs in eval mode.")
    # ---- generation ----
    max_prompt_length: int | None = f(None, "Keep the last this many prompt tokens (none: max_length - "
                                            "max_completion_length).")
    max_completion_length: int = f(128, "Longest sampled completion in tokens; a dataset completion is cut there "
                                        "too.")
    max_new_tokens: int | None = f(None, "TRL GKDConfig's name for max_completion_length: when given it sets "
                                         "max_completion_length (and is none in the resolved config); both with "
                                         "different values is an error.")
    top_p: float = f(0.95, "Nucleus sampling: keep the smallest token set with this much probability (1.0: all).")
    top_k: int = f(0, "Keep the k most likely tokens when sampling (0: all).")
    generation_kwargs: dict | None = f(None, "More keyword arguments for model.generate (they override the ones "
                                             "above).")

    def __post_init__(self):
        if self.max_new_tokens is not None:  # one setting, two spellings (as dataset_train_split)
            default = field_default(type(self), "max_completion_length")
            if self.max_completion_length not in (self.max_new_tokens, default):
                Checks(self).fail("max_new_tokens", f"is TRL GKDConfig's name for max_completion_length, which is "
                                                    f"set to {self.max_completion_length!r}; give one of them")
            self.max_completion_length, self.max_new_tokens = self.max_new_tokens, None
        super().__post_init__()
        c = Checks(self)
        c.within("lmbda", 0.0, 1.0)
        c.within("beta", 0.0, 1.0)
        c.positive("temperature")
        c.at_least(1, "max_completion_length", "max_prompt_length")
        c.at_least(0, "top_k")
        if not 0 < self.top_p <= 1:
            c.fail("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.max_prompt_length is None and self.max_length <= self.max_completion_length:
            c.fail("max_length", f"must exceed max_completion_length={self.max_completion_length} so prompts keep "
                                 f"tokens (or set max_prompt_length), got {self.max_length}")
        c.non_empty("teacher_model_name_or_path", "teacher_model_revision")
        if self.torch_compile:
            c.fail("torch_compile", "is not supported by distillation: the student also samples every step, and "
                                    "generation's shapes change each call")

    @property
    def prompt_limit(self) -> int:
        """The prompt tokens kept (from the end): max_prompt_length, else max_length - max_completion_length."""
        return self.max_prompt_length or self.max_length - self.max_completion_length


def load_teacher(teacher_model, args: DistillationConfig):
    """The frozen teacher: ``teacher_model`` (a model, or a folder / hub id), else ``args.teacher_model_name_or_path``.

    Loaded with the student's dtype, attention kernel and trust_remote_code, then
    ``teacher_model_init_kwargs``; returned in eval mode with no parameter requiring grad.
    """
    owner = type(args).__name__
    source = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
    if source is None:
        raise ConfigError(owner, "teacher_model_name_or_path", "no teacher: pass teacher_model=... (a model or a "
                                                               "folder) or set teacher_model_name_or_path")
    teacher = source
    if isinstance(source, (str, os.PathLike)):
        kwargs = dict(dtype=model_dtype(args), attn_implementation=args.attn_implementation)
        if args.trust_remote_code:
            kwargs["trust_remote_code"] = True
        if args.teacher_model_revision:
            kwargs["revision"] = args.teacher_model_revision
        extra = dict(args.teacher_model_init_kwargs or {})
        if isinstance(extra.get("dtype"), str) and extra["dtype"] != "auto":
            if extra["dtype"] not in MODEL_DTYPES:
                raise ConfigError(owner, "teacher_model_init_kwargs",
                                  f"dtype must be one of {', '.join(MODEL_DTYPES)}, got {extra['dtype']!r}")
            extra["dtype"] = getattr(torch, extra["dtype"])
        teacher = load_pretrained(AutoModelForCausalLM, source, "teacher_model_name_or_path", **{**kwargs, **extra})
    if args.fuse_activations:
        fuse_activations(teacher)
    return teacher.eval().requires_grad_(False)


def vocab_size(model) -> int:
    """Rows of the LM head (the logits' last dimension), else ``config.vocab_size``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def shared_vocab(student: int, teacher: int, tokens: int) -> int:
    """The logits both models' distributions are compared over: all of them, or, when the two LM heads differ in
    size but both cover the tokenizer's ``tokens`` ids, the first ``min(student, teacher)`` (the rows beyond are
    padding no token id reaches: models of one family are often padded to different multiples)."""
    if student == teacher:
        return student
    if min(student, teacher) < tokens:
        raise ValueError(f"the teacher's LM head has {teacher} rows and the student's {student}, and the tokenizer has "
                         f"{tokens} tokens; distillation compares the two next-token distributions token by token, so "
                         "both must use the student's tokenizer (a teacher of the student's model family)")
    return min(student, teacher)


def dataset_completions(prompts: list, columns: dict) -> list | None:
    """Each row's completion: the ``completion`` column, or a conversation's last assistant message; else None."""
    if "completion" in columns:
        return list(columns["completion"])
    if "messages" in columns:
        out = []
        for messages in columns["messages"]:
            messages = clean_messages(messages)
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            out.append([messages[last]])
        return out
    return None


def completion_ids(tokenizer, prompt, completion) -> list[int]:
    """Token ids of ``completion`` after ``prompt`` as the data layer tokenizes prompt-completion rows: the rest of
    the chat template's rendering for messages (its end-of-turn marker included), else the text plus EOS."""
    _, text = data.render_pair(tokenizer, prompt, completion)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if isinstance(prompt, str) and eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


class DistillationTrainer:
    """``DistillationTrainer(model, teacher_model, args, train_dataset, eval_dataset, processing_class)``, TRL 1.x
    style; see the module docstring.

    ``model``: the student, a path / hub id or a ``PreTrainedModel`` (default ``args.model_name_or_path``);
    ``teacher_model``: a path / hub id or a model with the same vocabulary (default
    ``args.teacher_model_name_or_path``); ``train_dataset``: a path, ``datasets.Dataset`` or rows in any
    prompt format (``rollout.prompts``; prompt-completion and conversational rows also give the
    dataset completions that lmbda < 1 trains on).
    """

    def __init__(self, model=None, teacher_model=None, args: DistillationConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None):
        self.args = args = args or DistillationConfig()
        owner = type(args).__name__
        check_run(args)
        if teacher_model is not None and teacher_model is model and not isinstance(model, str):
            raise ValueError("teacher_model is the very model being trained; pass another model (the teacher must "
                             "stay frozen while the student learns)")
        train, evals = load_prompt_sets(args, train_dataset, eval_dataset)  # data errors before any model loads
        completions = dataset_completions(*train)
        if args.lmbda < 1.0 and not args.seq_kd and completions is None:
            raise ConfigError(owner, "lmbda", f"is {args.lmbda}, so {1 - args.lmbda:.2g} of the micro-batches train on "
                                              "the dataset's completions, but the training data has prompts only; "
                                              "set lmbda to 1.0 (the student samples every completion), set seq_kd "
                                              "(the teacher samples them) or give prompt-completion rows")
        self.model, self.tokenizer = load_model_and_tokenizer(model, processing_class, args)
        self.teacher_model = load_teacher(teacher_model, args)
        self.vocab = shared_vocab(vocab_size(self.model), vocab_size(self.teacher_model), len(self.tokenizer))
        if args.disable_dropout:
            for module in self.model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        needed = args.lmbda < 1.0 and not args.seq_kd  # some micro-batches train on the dataset's completions
        self.train_dataset = self._rows(*train, completions if needed else None)
        self.eval_dataset = self._rows(*evals, None) if evals is not None else None
        self.loop = TrainLoop(args, self.model, self.train_dataset, self._collate, self._step,
                              eval_dataset=self.eval_dataset, eval_fn=self._evaluate, tokenizer=self.tokenizer)
        if self.loop.mechanics.sharded:
            raise ValueError("distillation does not run under FSDP or DeepSpeed yet (the teacher is not sharded and "
                             "the student samples with generate); run it in one process")
        self.accelerator = self.loop.accelerator
        self.teacher_model.to(self.accelerator.device)

    @property
    def processing_class(self):
        """The tokenizer, under TRL's name."""
        return self.tokenizer

    # ------------------------------------------------------------------ data
    def _rows(self, prompts: list, columns: dict, completions: list | None) -> list[dict]:
        """Token ids per row: the prompt's last ``prompt_limit`` tokens and, when given, its completion's first
        ``max_completion_length``."""
        cfg = self.args
        queries = encode_prompts(self.tokenizer, prompts, cfg.prompt_limit)
        rows = []
        for i, query in enumerate(queries):
            row = {"prompt_ids": query.tolist(), "completion_ids": None}
            if completions is not None:
                try:
                    ids = completion_ids(self.tokenizer, prompts[i], completions[i])
                except data.DataError as err:
                    raise data.DataError(f"training data row {i}: {err}") from None
                row["completion_ids"] = ids[:cfg.max_completion_length]
            rows.append(row)
        return rows

    @staticmethod
    def _collate(rows: list[dict]) -> dict:
        batch = {"prompt_ids": [torch.tensor(r["prompt_ids"], dtype=torch.long) for r in rows]}
        if rows[0]["completion_ids"] is not None:
            batch["completion_ids"] = [torch.tensor(r["completion_ids"], dtype=torch.long) for r in rows]
        return batch

    # ------------------------------------------------------------------ sampling and the loss
    def _generation_kwargs(self) -> dict:
        cfg = self.args
        kwargs = dict(do_sample=True, max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                      top_p=cfg.top_p, top_k=cfg.top_k, eos_token_id=self.tokenizer.eos_token_id)
        return {**kwargs, **(cfg.generation_kwargs or {})}

    @torch.no_grad()
    def _sample(self, model, queries: list[torch.Tensor]) -> list[torch.Tensor]:
        """One completion per query from ``model`` (eval mode while it samples), its stop token kept."""
        responses, _, _ = sample_responses(model, queries, self._generation_kwargs(),
                                           pad_token_id=self.tokenizer.pad_token_id,
                                           eos_token_id=self.tokenizer.eos_token_id, batch_size=len(queries))
        eos = self.tokenizer.eos_token_id
        return [r if len(r) else r.new_full((1,), eos) for r in responses]  # nothing sampled: train on the stop

    def _logits(self, model, queries: list[torch.Tensor], responses: list[torch.Tensor]):
        """Student logits (with grad), teacher logits (no grad) and the mask over ``responses`` after ``queries``."""
        batch = build_batch(queries, responses, None, self.tokenizer.pad_token_id)
        student = response_forward(model, batch, where="the distillation loss").logits[..., :self.vocab]  # (B, R, V)
        with torch.no_grad():
            teacher = response_forward(self.teacher_model, batch, where="the teacher's forward").logits
            teacher = teacher[..., :self.vocab]  # (B, R, V)
        return student, teacher, batch.mask  # mask (B, R)

    def _step(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.args
        queries = batch["prompt_ids"]
        on_policy = bool(torch.rand(()) < cfg.lmbda)  # always drawn: the RNG advances alike whatever lmbda is
        if on_policy:
            responses = self._sample(self.accelerator.unwrap_model(model), queries)
        elif cfg.seq_kd:
            responses = self._sample(self.teacher_model, queries)
        else:
            responses = batch["completion_ids"]
        student, teacher, mask = self._logits(model, queries, responses)
        loss, metrics = generalized_jsd_loss(student, teacher, mask, beta=cfg.beta, temperature=cfg.temperature)
        return loss, {"on_policy": mask.new_tensor(float(on_policy)), "num_tokens": metrics["num_tokens"],
                      "divergence_max": metrics["divergence_max"],
                      "completions/mean_length": mask.sum() / mask.shape[0]}

    @torch.no_grad()
    def _evaluate(self, model, loader, accelerator) -> dict:
        """The student samples a completion for every eval prompt; the divergence to the teacher there, token mean."""
        device = accelerator.device
        total, reverse, tokens, rows = (torch.zeros((), device=device) for _ in range(4))
        cfg = self.args
        for batch in loader:
            queries = batch["prompt_ids"]
            responses = self._sample(accelerator.unwrap_model(model), queries)
            student, teacher, mask = self._logits(model, queries, responses)
            loss, metrics = generalized_jsd_loss(student, teacher, mask, beta=cfg.beta, temperature=cfg.temperature,
                                                 reduction="sum")
            total += loss.float()
            reverse += loss.float() if cfg.beta == 1.0 else generalized_jsd_loss(
                student, teacher, mask, beta=1.0, temperature=cfg.temperature, reduction="sum")[0].float()
            tokens += metrics["num_tokens"]
            rows += len(queries)
        total, reverse, tokens, rows = (accelerator.reduce(x, "sum") for x in (total, reverse, tokens, rows))
        n = tokens.clamp_min(1)
        return {"loss": (total / n).item(), "reverse_kl": (reverse / n).item(),
                "completions/mean_length": (tokens / rows.clamp_min(1)).item()}

    # ------------------------------------------------------------------ the run
    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        """Run ``max_steps`` optimiser steps (or the epochs; or resume); writes the student to ``output_dir``."""
        return finish_training(self, "distill", self.loop.train(resume_from_checkpoint))

    def evaluate(self) -> dict:
        """The divergence to the teacher on the student's samples for the eval prompts (``eval/*``)."""
        return self.loop.evaluate()

    def save_model(self, path=None) -> None:
        """Save the student (and tokenizer) to ``path`` (default ``args.output_dir``)."""
        self.loop.save_model(path or self.args.output_dir)
