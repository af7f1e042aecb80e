"""PPOTrainer: the classic ``generate`` / ``step(queries, responses, scores)`` API.

Reads top to bottom like the algorithm (Ziegler et al. 2019; Stiennon et al. 2020):
construction (policy with value head, frozen reference, optimiser), ``generate`` (sample
responses), ``step`` (score -> per-token KL-penalised rewards -> GAE -> ``ppo_epochs`` passes of
clipped policy and value losses over shuffled minibatches), logging and saving, and last TRL
0.11.4's public helper methods on its full-sequence layout. The math is in ``rlhfkit.algos``, the
input checks in ``ppo_batch``, the step statistics and the ptx stream in ``ppo_stats``, the
optimiser/logging mechanics in ``mechanics``, the ``train()`` loop and checkpoints in ``ppo_train``.
"""

from __future__ import annotations

import inspect
import random
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import algos
from ..models import create_reference_model, is_peft_model, reference_context
from ..models.compat import enable_checkpointing
from ..models.fused import cpu_fp32_attention, fuse_activations
from ..core import PPODecorators
from ..rollout import (build_batch, build_seq2seq_batch, forward_batch, packed_forward_batch,
                       require_padding_free)
from ..rollout.decode import RolloutCache, lean_settings
from ..rollout.sampling import sample_responses
from . import ppo_stats, ppo_train
from .mechanics import Mechanics, build_optimizer, set_seed
from .ppo_batch import (check_step_inputs, check_token_rewards, check_train_inputs, check_trainer_inputs,
                        max_positions, vocab_size)
from .ppo_config import PPOConfig
from .ppo_stats import PTXStream, summarise_minibatches
from .ppo_train import TrainState


class PPOTrainer:
    """``PPOTrainer(config, model, ref_model=None, tokenizer=None, dataset=None, optimizer=None,
    data_collator=None, num_shared_layers=None, lr_scheduler=None, training_data_collator=None)``,
    as in the classic API (TRL 0.11.4's argument order, checks and warnings).

    ``num_shared_layers`` (no ``ref_model``): the reference shares, and the policy freezes,
    the embeddings and first N layers (``create_reference_model``). ``optimizer`` and
    ``lr_scheduler`` become Accelerate's wrappers (``trainer.optimizer.optimizer`` is yours).
    rlhfkit extras (keyword-only): ``critic`` (a ``CriticModel`` used instead of the shared
    value head, trained with ``config.critic_learning_rate``; ``optimizer`` may then be a pair
    ``(policy_optimizer, critic_optimizer)``, kept as ``trainer.optimizer`` and ``trainer.critic_optimizer``.
    FSDP needs one optimiser per model: there the two models are prepared apart, a single optimiser
    over both is refused, and without one each model gets its own Adam. DeepSpeed refuses a separate
    critic) and ``ptx_dataset`` (texts or ``input_ids`` for the SFT loss mixed in with
    ``config.ptx_coef``) and ``rollout_engine`` (a
    ``rlhfkit.rollout.vllm.VLLMRollout``: ``generate`` samples with it, and every ``step`` pushes the
    updated weights into it; untested on GPU hardware, see docs/ppo.md).
    """

    # ------------------------------------------------------------------ construction
    def __init__(self, config: PPOConfig | None = None, model=None, ref_model=None, tokenizer=None, dataset=None,
                 optimizer=None, data_collator=None, num_shared_layers: int | None = None, lr_scheduler=None,
                 training_data_collator=None, *, critic=None, ptx_dataset=None, rollout_engine=None):
        self.config = config = config if config is not None else PPOConfig()
        model, ref_model = check_trainer_inputs(config, model, ref_model, tokenizer, dataset, lr_scheduler,
                                                num_shared_layers)
        set_seed(config.seed)
        self.mechanics = Mechanics(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_grad_norm=config.max_grad_norm, log_with=config.log_with,
            logging_dir=config.project_kwargs.get("logging_dir"), accelerator_kwargs=config.accelerator_kwargs,
            tracker_project_name=config.tracker_project_name, tracker_config=config.to_dict(),
            tracker_kwargs=config.tracker_kwargs, micro_batch_size=config.mini_batch_size)
        self.accelerator = self.mechanics.accelerator
        if self.mechanics.deepspeed and config.critic_warmup_steps:
            raise ValueError("critic_warmup_steps > 0 is not supported under DeepSpeed (its engine steps inside "
                             "backward(), before the policy's gradients could be dropped); set it to 0 or use "
                             "DDP/FSDP2")
        if self.mechanics.deepspeed and critic is not None:
            raise ValueError("a separate critic= is not supported under DeepSpeed: each DeepSpeed engine clips and "
                             "steps its own model inside backward(), so the policy and the critic could not be "
                             "clipped by their joint gradient norm as elsewhere; use FSDP2 or DDP, or the policy's "
                             "shared value head (no critic=)")
        self.current_device = self.accelerator.device
        self.is_distributed = self.accelerator.num_processes > 1
        config.set_computed(world_size=self.accelerator.num_processes,
                            is_encoder_decoder=bool(getattr(model.config, "is_encoder_decoder", False)),
                            is_peft_model=is_peft_model(model))
        self.is_encoder_decoder, self.is_peft_model = config.is_encoder_decoder, config.is_peft_model
        if self.is_encoder_decoder and (critic is not None or ptx_dataset is not None):
            raise ValueError("critic= and ptx_dataset= are for causal LMs; an encoder-decoder policy uses its own "
                             "value head and no ptx loss")
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither pad_token nor eos_token; set tokenizer.pad_token")
        PPODecorators.optimize_device_cache = config.optimize_device_cache

        self._setup_models(model, ref_model, critic, num_shared_layers)
        optimizers = self._optimizers_for(optimizer)
        self.dataset = dataset
        self.data_collator = data_collator
        self.training_data_collator = training_data_collator
        if critic is not None and self.mechanics.sharded:
            # FSDP2 takes one model per prepare() call, each with the optimiser of its own parameters
            self._train_model, policy_optimizer = self.accelerator.prepare(model, optimizers[0])
            self._train_critic, critic_optimizer = self.accelerator.prepare(critic, optimizers[1])
            optimizers = (policy_optimizer, critic_optimizer)
        else:
            prepared = self.accelerator.prepare(*(m for m in (model, critic) if m is not None), *optimizers)
            self._train_model = prepared[0]
            self._train_critic = prepared[1] if critic is not None else None
            optimizers = prepared[-len(optimizers):]
        self._collect_params()  # FSDP2 swapped in sharded parameters: the lists taken above are stale
        self.mechanics.register_generate(self._train_model)  # generate() through FSDP2's root hooks
        # Accelerate's wrappers, as TRL: `trainer.optimizer.optimizer` is the user's optimiser; with one
        # optimiser per model, `trainer.critic_optimizer` is the critic's
        self.optimizer = optimizers[0]
        self.critic_optimizer = optimizers[1] if len(optimizers) > 1 else None
        self._stepped = self.optimizer if self.critic_optimizer is None else tuple(optimizers)
        self.lr_scheduler = self.accelerator.prepare(lr_scheduler) if lr_scheduler is not None else None
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)
        self.dataloader = self.prepare_dataloader(dataset, data_collator) if dataset is not None else None
        self.ptx = PTXStream(ptx_dataset, tokenizer, config.ptx_batch_size, config.seed,
                             self.accelerator.device) if ptx_dataset is not None else None
        if config.ptx_coef > 0 and self.ptx is None:
            raise ValueError("PPOConfig.ptx_coef > 0 needs PPOTrainer(..., ptx_dataset=...)")

        self.kl_ctl = (algos.AdaptiveKLController(config.init_kl_coef, config.target, config.horizon)
                       if config.adap_kl_ctrl else algos.FixedKLController(config.init_kl_coef))
        self.running = algos.RunningMoments()
        self._shuffle = torch.Generator().manual_seed(config.seed)
        self.current_step = 0
        self.train_state = TrainState(random.Random(config.seed))  # train()'s prompt sampler & co. (ppo_train)
        self.max_length = max_positions(model.config)
        self.vocab_size = vocab_size(model)
        self.rollout_engine = rollout_engine
        # sampling-time log-probs/values reused as the old policy's (docs/ppo.md, detail 27)
        self._rollout_cache, self._policy_version, self._reuse_verified = RolloutCache(), 0, False
        self._reuse_rollouts = bool(config.reuse_rollout_logprobs)
        if rollout_engine is not None:  # the engine may have loaded other weights than this policy's
            rollout_engine.sync_weights(self.unwrapped_model)

    @property
    def unwrapped_model(self):
        """The policy being trained (with its value head) out of Accelerate's wrapper (DDP, a DeepSpeed
        engine): the module to sample from or evaluate, as ``generate`` and checkpoint loading do."""
        return self.accelerator.unwrap_model(self._train_model)

    def _setup_models(self, model, ref_model, critic, num_shared_layers) -> None:
        """Policy, frozen reference (or None under PEFT), optional critic, and their parameter lists."""
        config = self.config
        self.model, self.critic = model, critic
        if ref_model is None and not config.is_peft_model:
            ref_model = create_reference_model(model, num_shared_layers=num_shared_layers)
        self.ref_model = ref_model
        if self.ref_model is not None:
            self.ref_model.eval().requires_grad_(False)
        if critic is not None:  # the shared head is unused: DDP refuses trainable parameters without a gradient
            model.v_head.requires_grad_(False)
        if config.disable_dropout:
            for m in (model, ref_model, critic):
                _disable_dropout(m)
        if config.fuse_activations:  # same function, fewer kernels (models/fused.py)
            for m in (model, ref_model, critic):
                if m is not None:
                    fuse_activations(m)
                    cpu_fp32_attention(m)
        if config.gradient_checkpointing:
            enable_checkpointing(model.pretrained_model)
        if config.padding_free:  # after the attention swap above: the check runs what training runs
            if config.is_encoder_decoder:
                raise ValueError("padding_free=True is for causal LMs; an encoder-decoder policy runs padded batches "
                                 "(set padding_free=False)")
            for m in (model, ref_model, critic):
                if m is not None:
                    require_padding_free(m)
        self._collect_params()

    def _collect_params(self) -> None:
        """Policy, value and (for the optimiser step) all trained parameter lists. Called again
        after prepare(): FSDP2 replaces every parameter with a sharded one in place."""
        model, critic = self.model, self.critic
        self.policy_params = [p for p in (model.pretrained_model if critic is not None else model).parameters()
                              if p.requires_grad]
        self.value_params = [p for p in (critic if critic is not None else model.v_head).parameters() if p.requires_grad]
        value_ids = {id(p) for p in self.value_params}
        self._policy_only_params = [p for p in self.policy_params if id(p) not in value_ids]
        self.params = self._policy_only_params + self.value_params

    def _optimizers_for(self, optimizer) -> tuple:
        """The optimiser(s) to prepare: ``(one,)`` over every trained parameter, or ``(policy's, critic's)``.

        A separate critic under FSDP is prepared apart from the policy, so each needs an optimiser over
        its own parameters: a single optimiser over both is refused there. A pair
        ``(policy_optimizer, critic_optimizer)`` is taken everywhere a separate critic trains.
        """
        split = self.critic is not None and self.mechanics.sharded
        if isinstance(optimizer, (tuple, list)):
            if self.critic is None or len(optimizer) != 2:
                raise ValueError("optimizer=(policy_optimizer, critic_optimizer) is for a separate critic=; pass "
                                 "one optimiser otherwise")
            for opt, module, who in ((optimizer[0], self.model, "policy"), (optimizer[1], self.critic, "critic")):
                mine = {id(p) for p in module.parameters()}
                if any(id(p) not in mine for g in opt.param_groups for p in g["params"]):
                    raise ValueError(f"optimizer=(policy_optimizer, critic_optimizer): the {who} optimiser updates "
                                     f"parameters that are not the {who}'s")
            return tuple(optimizer)
        if optimizer is not None and split:
            raise ValueError("under FSDP the policy and a separate critic are prepared apart, each "
                             "with its own optimiser: pass optimizer=(policy_optimizer, critic_optimizer), one over "
                             "model's trainable parameters and one over critic's, or no optimizer (PPOConfig's "
                             "optimizer, learning_rate and critic_learning_rate then build both)")
        if optimizer is not None:
            return (optimizer,)
        return self._default_optimizer(split)

    def _default_optimizer(self, split: bool = False) -> tuple:
        """Adam over the policy (with the shared head); a separate critic gets its own learning rate, in a
        second parameter group (``split``: in an optimiser of its own)."""
        config = self.config
        groups = [{"params": self.policy_params, "lr": config.learning_rate}]
        if self.critic is not None:
            groups.append({"params": self.value_params, "lr": config.critic_learning_rate or config.learning_rate})
        if split:
            return tuple(build_optimizer([g], config.optimizer, config.learning_rate, config.weight_decay)
                         for g in groups)
        return (build_optimizer(groups, config.optimizer, config.learning_rate, config.weight_decay),)

    # ------------------------------------------------------------------ construction: data
    def prepare_dataloader(self, dataset, data_collator=None) -> DataLoader:
        """Shuffled batches of ``config.batch_size`` (last partial batch dropped), as the classic API."""
        if self.config.remove_unused_columns and hasattr(dataset, "column_names") and hasattr(dataset, "set_format"):
            allowed = set(inspect.signature(self.model.forward).parameters) | {"label", "query", "response"}
            columns = [c for c in dataset.column_names if c in allowed]
            dataset.set_format(type=dataset.format["type"], columns=columns,
                               format_kwargs=dataset.format.get("format_kwargs", {}))
        loader = DataLoader(dataset, batch_size=self.config.batch_size, collate_fn=data_collator, shuffle=True,
                            drop_last=True, generator=torch.Generator().manual_seed(self.config.seed))
        return self.accelerator.prepare(loader)

    # ------------------------------------------------------------------ generate: sample the responses
    def generate(self, query_tensor, length_sampler=None, batch_size: int = 4, return_prompt: bool = True,
                 generate_ref_response: bool = False, remove_padding: bool = True, **generation_kwargs):
        """Sample responses. A list of 1-D queries gives a list of 1-D tensors (left-padded
        batches of ``batch_size``, cut after the first EOS); a single 1-D query gives a
        ``(1, L)`` tensor. With ``generate_ref_response`` also returns the reference's.

        Samples with the rollout engine when there is one, else with the lean decode loop (which
        keeps the sampled tokens' log-probs and values for ``step``) where it applies, else with
        Hugging Face ``generate``."""
        single = isinstance(query_tensor, torch.Tensor)
        if single and query_tensor.dim() != 1:
            raise ValueError(f"query_tensor must be a 1-D tensor or a list of 1-D tensors, got shape "
                             f"{tuple(query_tensor.shape)}; pass list(batch) for a batch")
        queries = [query_tensor] if single else list(query_tensor)
        if not queries:
            raise ValueError("generate() got an empty list of queries")
        queries = [q.to(self.accelerator.device) for q in queries]
        eos = self.tokenizer.eos_token_id
        kwargs = dict(pad_token_id=self.pad_token_id, eos_token_id=eos, batch_size=batch_size,
                      return_prompt=return_prompt, remove_padding=remove_padding and not single,
                      length_sampler=length_sampler)
        model = self.unwrapped_model
        if self.rollout_engine is not None and not generate_ref_response and length_sampler is None:
            out, _, _ = sample_responses(model, queries, generation_kwargs, engine=self.rollout_engine, **kwargs)
            return out[0].unsqueeze(0) if single else out  # the engine runs its own kernels: no autocast
        lean = self._lean_generation(model, generation_kwargs, length_sampler, remove_padding and not single)
        with self.mechanics.autocast():
            out, _, records = sample_responses(model, queries, generation_kwargs, lean=lean, **kwargs)
            if records is not None:
                self._rollout_cache.store(self._policy_version, records)
            ref = None
            if generate_ref_response:
                ref_model = self.ref_model if self.ref_model is not None else model
                ref, _, _ = sample_responses(ref_model, queries, generation_kwargs,
                                             use_reference=self.ref_model is None, **kwargs)
        if single:
            out = out[0].unsqueeze(0)
            ref = ref[0].unsqueeze(0) if ref is not None else None
        return (out, ref) if generate_ref_response else out

    def _lean_generation(self, model, generation_kwargs, length_sampler, remove_padding: bool):
        """The generation config when ``generate`` may sample with ``rollout.decode`` and keep the
        sampled tokens' log-probs and values for ``step``; None to use Hugging Face generate."""
        cfg = self.config
        if (not self._reuse_rollouts or cfg.mixed_precision != "no" or self.is_encoder_decoder
                or self.critic is not None or self.is_peft_model or length_sampler is not None or not remove_padding
                or cfg.kl_penalty == "full"):
            return None  # bf16 numerics differ between cached decode and full forward; the others need more
        return lean_settings(model, dict(generation_kwargs, pad_token_id=generation_kwargs.get(
            "pad_token_id", self.pad_token_id)))

    # ------------------------------------------ step: score -> KL-penalised rewards -> GAE -> minibatch epochs
    def step(self, queries, responses, scores, response_masks=None, *, token_rewards=None) -> dict:
        """One PPO update on ``batch_size`` scored rollouts; returns the classic stats dict.

        ``response_masks`` (one 0/1 tensor per response, 1 = a token the policy sampled) makes a
        response a multi-turn episode: its 0 tokens (tool results, observations) are context, not
        actions. They take no part in the policy loss, the KL penalty, the entropy or the value
        loss, and GAE runs over the 1 tokens only (``algos.gae(..., skip_masked=True)``: an
        inserted span is skipped, the last policy token before it bootstraps from the value of the
        first policy token after it); their advantages, returns and values are 0. The score lands
        on the last policy token. ``token_rewards`` (rlhfkit extension; one float tensor per
        response, 0 on inserted tokens) adds rewards on chosen policy tokens, e.g. an environment's
        per-turn rewards at the last token of each turn; the score processing (scaling, clipping,
        ``missing_eos_penalty``) applies to ``scores`` only. See docs/agents.md#ppo.
        """
        cfg, timing, t0 = self.config, {}, time.time()
        queries, responses, scores, response_masks = check_step_inputs(
            queries, responses, scores, response_masks, cfg.batch_size, self.max_length, self.accelerator.device,
            self.vocab_size)
        if token_rewards is not None:
            if self.is_encoder_decoder:
                raise ValueError("token_rewards is for causal LMs; an encoder-decoder policy takes scores only")
            token_rewards = check_token_rewards(token_rewards, responses, response_masks, self.accelerator.device)
        raw_scores = scores
        scores = self._process_scores(scores, responses)
        batch = (build_seq2seq_batch(queries, responses, response_masks, self.pad_token_id,
                                     self.model.config.decoder_start_token_id) if self.is_encoder_decoder
                 else build_batch(queries, responses, response_masks, self.pad_token_id))
        mask = batch.mask

        t = time.time()
        cached = (self._rollout_cache.lookup(self._policy_version, queries, responses, batch.response_length)
                  if self._reuse_rollouts and not self.is_encoder_decoder else None)
        logprobs, values, ref_logprobs, full_kl = self._rollout_forward(batch, cached)
        timing["time/ppo/forward_pass"] = time.time() - t
        t = time.time()
        kl = full_kl if full_kl is not None else algos.kl_penalty(logprobs, ref_logprobs, cfg.kl_penalty)  # (B, R)
        kl_coef = self.kl_ctl.value
        rewards, non_score_reward = algos.kl_penalized_rewards(scores, kl, mask, kl_coef)  # (B, R)
        if token_rewards is not None:
            rewards = rewards + _padded(token_rewards, rewards)  # (B, R)
        timing["time/ppo/compute_rewards"] = time.time() - t
        t = time.time()
        advantages, returns = self._advantages(rewards, values, mask, skip_masked=True)  # (B, R) each
        timing["time/ppo/compute_advantages"] = time.time() - t

        t = time.time()
        # inserted tokens are no actions: advantage 0 there (whitening shifted them) and value 0
        rollout = dict(logprobs=logprobs, values=values * mask, advantages=advantages * mask, returns=returns)
        minibatch_stats = self._optimize(batch, rollout)
        self._policy_version += 1  # rollouts sampled before this update are stale
        timing["time/ppo/optimize_step"] = time.time() - t
        if self.rollout_engine is not None:  # the next rollouts must come from the updated policy
            t = time.time()
            self.rollout_engine.sync_weights(self.unwrapped_model)
            timing["time/ppo/weight_sync"] = time.time() - t

        t = time.time()
        train_stats = summarise_minibatches(minibatch_stats)
        stats = ppo_stats.record_step_stats(scores=scores, raw_scores=raw_scores, logprobs=logprobs,
                                            ref_logprobs=ref_logprobs, kl=kl, non_score_reward=non_score_reward,
                                            mask=mask, kl_coef=kl_coef, queries=queries, responses=responses,
                                            train_stats=train_stats)
        timing["time/ppo/calc_stats"] = time.time() - t
        stats["ppo/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        self.kl_ctl.update(stats["objective/kl"], cfg.batch_size * self.accelerator.num_processes)
        timing["time/ppo/total"] = time.time() - t0
        stats.update(timing)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.current_step += 1
        return stats

    def _process_scores(self, scores: torch.Tensor, responses) -> torch.Tensor:
        cfg = self.config
        if cfg.missing_eos_penalty is not None:
            eos = self.tokenizer.eos_token_id
            ended = torch.tensor([bool(len(r)) and int(r[-1]) == eos for r in responses], device=scores.device)
            scores = torch.where(ended, scores, scores - cfg.missing_eos_penalty)
        if cfg.use_score_scaling:
            self.running.update(self.accelerator.gather(scores))  # global moments across processes
            std = self.running.std.to(scores) + torch.finfo(scores.dtype).eps
            scores = (scores - self.running.mean.to(scores)) / std if cfg.use_score_norm else scores / std
        if cfg.score_clip is not None:
            scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
        return scores

    @torch.no_grad()
    def _rollout_forward(self, batch, cached=None):
        """Old log-probs and values of the policy, reference log-probs, full KL or None; (B, R) each.

        Runs in chunks of ``mini_batch_size`` rows so at most two chunks of logits
        (policy and reference) are alive at once. ``cached`` (logprobs, values) from sampling
        replace the policy's pass once one step has shown they agree with it (else: recompute).
        """
        full = self.config.kl_penalty == "full"
        ref_model = self.ref_model if self.ref_model is not None else self._train_model
        skip_policy = cached is not None and self._reuse_verified
        self._set_train(False)
        R, parts = batch.response_length, []
        for start in range(0, len(batch.input_ids), self.config.mini_batch_size):
            chunk = batch.rows(torch.arange(start, min(start + self.config.mini_batch_size, len(batch.input_ids))))
            with self.mechanics.autocast():
                with reference_context(self.model, self.ref_model):
                    ref_logprobs, _, ref_logits = self._forward(ref_model, chunk)
                logprobs, values, logits = ((ref_logprobs, ref_logprobs, None) if skip_policy
                                            else self._forward(self._train_model, chunk, self._train_critic))
            full_kl = algos.kl_full(logits, ref_logits) if full else torch.zeros_like(logprobs)
            del logits, ref_logits
            # chunks may be narrower than the batch (trimmed padding): pad back to R with zeros
            parts.append([F.pad(t, (0, R - t.shape[1])) for t in (logprobs, values, ref_logprobs, full_kl)])
        logprobs, values, ref_logprobs, full_kl = (torch.cat(ts) for ts in zip(*parts))
        if cached is not None and not skip_policy:
            self._check_cached(cached, logprobs, values, batch.mask)
        if cached is not None and self._reuse_verified:  # the verifying step too: a resumed run computes the same
            logprobs, values = cached
        return logprobs, values, ref_logprobs, (full_kl if full else None)

    def _forward(self, model, batch, critic=None):
        """``forward_batch`` (log-probs, values, logits of the response tokens), padding-free with ``padding_free``."""
        if self.config.padding_free:
            return packed_forward_batch(model, batch, critic, self.config.max_packed_length)
        return forward_batch(model, batch, critic)

    def _check_cached(self, cached, logprobs, values, mask, tol: float = 1e-4) -> None:
        """First reuse: the sampled log-probs/values must equal the recomputed ones within ``tol``."""
        valid = mask.bool()
        gap = max(float((cached[0] - logprobs)[valid].abs().max()), float((cached[1] - values)[valid].abs().max()))
        self._reuse_verified = gap <= tol
        if not self._reuse_verified:
            self._reuse_rollouts = False
            warnings.warn(f"sampling-time log-probs/values differ from the recomputed ones by {gap:.2e} (> {tol}); "
                          "PPOTrainer recomputes them from now on", stacklevel=3)

    def _advantages(self, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, skip_masked: bool = False):
        """``whiten_rewards`` -> GAE -> ``whiten_advantages``: (advantages, returns), (B, T) each.
        Shared by ``step`` (GAE over the policy tokens only, ``skip_masked``) and the classic
        ``compute_advantages`` (TRL's full-sequence recursion)."""
        cfg = self.config
        if cfg.whiten_rewards:
            rewards = algos.masked_whiten(rewards * mask, mask, shift_mean=False)
        advantages, returns = algos.gae(rewards, values, mask, cfg.gamma, cfg.lam, skip_masked=skip_masked)  # (B, T)
        if cfg.whiten_advantages:
            advantages = algos.masked_whiten(advantages, mask)
        return advantages, returns

    def _optimize(self, batch, rollout) -> list[dict]:
        cfg = self.config
        B, mbs = cfg.batch_size, cfg.mini_batch_size
        warmup = self.current_step < cfg.critic_warmup_steps
        self._set_train(True)
        all_stats = []
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=self._shuffle).to(batch.input_ids.device)
            for start in range(0, B, mbs):
                idx = order[start:start + mbs]
                stats = self._train_minibatch(batch.rows(idx), {k: v[idx] for k, v in rollout.items()}, warmup)
                all_stats.append(stats)
                if cfg.early_stopping and float(stats["policy/policykl"]) > 1.5 * cfg.target_kl:
                    for optimizer in (self.optimizer, self.critic_optimizer):
                        if optimizer is not None:
                            optimizer.zero_grad(set_to_none=True)
                    return all_stats
        return all_stats

    def _train_minibatch(self, mb, old: dict, critic_warmup: bool) -> dict:
        cfg = self.config
        R = mb.response_length
        old = {k: v[:, :R] for k, v in old.items()}
        with self.mechanics.autocast():
            logprobs, vpreds, logits = self._forward(self._train_model, mb, self._train_critic)
            pg_loss, pg_stats = algos.policy_loss(logprobs, old["logprobs"], old["advantages"], mb.mask,
                                                  cfg.cliprange, cfg.dual_clip)
            vf_loss, vf_stats = algos.value_loss(vpreds, old["values"], old["returns"], mb.mask, cfg.cliprange_value)
            if cfg.entropy_coef:
                entropy = algos.entropy_from_logits(logits)  # (b, R), differentiable for the bonus
            else:  # a statistic only: no graph, one sequence at a time to bound the float32 temporaries
                with torch.no_grad():
                    entropy = algos.entropy_from_logits(logits, chunk_size=logits.shape[1])  # (b, R)
            loss = vf_loss * cfg.vf_coef
            if not critic_warmup:
                loss = loss + pg_loss + algos.entropy_bonus(entropy, mb.mask, cfg.entropy_coef)
            ptx_loss = self.ptx.loss(self._train_model) if self.ptx is not None and cfg.ptx_coef > 0 else None
            if ptx_loss is not None and not critic_warmup:
                loss = loss + cfg.ptx_coef * ptx_loss
        # A runaway ratio means a stale or broken rollout: drop this minibatch's gradient entirely.
        # (TRL 0.11 zeroed the loss but still stepped Adam, whose momentum kept moving the weights.)
        skipped = pg_stats["ratio_mean"] > cfg.ratio_threshold
        skip = bool(skipped)
        backward_loss = loss
        if skip and self.mechanics.deepspeed:  # the engine counts micro-steps itself: back-propagate zeros
            backward_loss, skip = loss * 0.0, False
        if not skip:
            self.mechanics.backward(backward_loss)
            if critic_warmup:  # the value loss must not move the policy (a shared backbone) during warm-up
                for p in self._policy_only_params:
                    p.grad = None
        self.mechanics.optimizer_step(self._stepped, self.params, skip_backward=skip)
        loss = torch.where(skipped, loss * 0.0, loss)
        zero = torch.zeros((), device=loss.device)
        return {
            "loss/policy": torch.where(skipped, zero, pg_loss.detach()),
            "loss/value": torch.where(skipped, zero, vf_loss.detach()),  # unscaled, as the classic stat
            "loss/total": loss.detach(),
            "loss/ptx": ptx_loss.detach() if ptx_loss is not None else zero,
            "policy/entropy": algos.masked_mean(entropy.detach(), mb.mask),
            "policy/approxkl": pg_stats["approxkl"], "policy/policykl": pg_stats["policykl"],
            "policy/clipfrac": pg_stats["clipfrac"], "policy/dual_clipfrac": pg_stats["dual_clipfrac"],
            "policy/advantages": old["advantages"][mb.mask.bool()],
            "policy/advantages_mean": algos.masked_mean(old["advantages"], mb.mask),
            "policy/ratio": pg_stats["ratio"][mb.mask.bool()],
            "policy/skipped": skipped.float(),
            "returns/mean": algos.masked_mean(old["returns"], mb.mask),
            "returns/var": algos.masked_var(old["returns"], mb.mask),
            "val/vpred": vf_stats["vpred"], "val/error": vf_stats["error"], "val/clipfrac": vf_stats["clipfrac"],
            "val/mean": algos.masked_mean(old["values"], mb.mask), "val/var": algos.masked_var(old["values"], mb.mask),
        }

    def _set_train(self, mode: bool) -> None:
        for m in (self._train_model, self._train_critic):
            if m is not None:
                m.train(mode)

    # ------------------------------------------------------------------ logging and saving
    def log_stats(self, stats: dict, batch: dict, rewards, columns_to_log=("query", "response")) -> None:
        """Log step stats plus ``env/reward_mean|std|dist`` to the configured trackers."""
        rewards = torch.stack([torch.as_tensor(r, dtype=torch.float32).reshape(()) for r in rewards]) \
            if isinstance(rewards, (list, tuple)) else torch.as_tensor(rewards, dtype=torch.float32).flatten()
        rewards = self.accelerator.gather(rewards.to(self.accelerator.device)).flatten()
        if not all(c in batch for c in columns_to_log):
            warnings.warn(f"the batch lacks some of {list(columns_to_log)}; no game logs are written", stacklevel=2)
        logs = dict(stats)
        logs["env/reward_mean"] = rewards.mean().item()
        logs["env/reward_std"] = rewards.std(correction=min(1, len(rewards) - 1)).item()
        logs["env/reward_dist"] = rewards.cpu().numpy()
        self.mechanics.log(logs, step=self.current_step)

    def train(self, reward_fn, prompts, **kwargs) -> list[dict]:
        """Run the whole loop with a reward function; see ``rlhfkit.trainers.ppo_train.train_ppo``.

        ``tools=``, ``environment_factory=`` and ``tool_parser=`` (or ``config.tools`` /
        ``config.environment_factory``) make every response a multi-turn episode (docs/agents.md#ppo)."""
        multi_turn = any(kwargs.get(k) is not None for k in ("tools", "environment_factory", "tool_parser")) or \
            bool(self.config.tools) or self.config.environment_factory is not None
        check_train_inputs(reward_fn, prompts, multi_turn)  # before any model work
        return ppo_train.train_ppo(self, reward_fn, prompts, **kwargs)

    def save_pretrained(self, save_directory) -> None:
        """Save the policy (Transformers checkpoint + value head), the tokenizer and a separate critic.

        Under FSDP2 / ZeRO-3 every process must call it: the sharded weights are gathered first."""
        write = self.model_writer()
        if self.accelerator.is_main_process:
            write(save_directory)

    def model_writer(self):
        """``write(folder)`` of ``save_pretrained``'s files, for the main process; every rank calls this
        (under FSDP2 / ZeRO-3 the sharded weights are gathered here, a collective)."""
        full = self.mechanics.full_state_dict(self._train_model)  # None unless sharded
        critic_full = self.mechanics.full_state_dict(self._train_critic) if self._train_critic is not None else None

        def write(save_directory) -> None:
            model = self.unwrapped_model
            if full is None:
                model.save_pretrained(save_directory)
            else:
                from safetensors.torch import save_file

                body = {k: v for k, v in full.items() if not k.startswith("v_head.")}
                head = {k.removeprefix("v_head."): v.contiguous() for k, v in full.items() if k.startswith("v_head.")}
                self.mechanics.alias_tied(body, model.pretrained_model)  # embeddings = LM head saved once
                model.pretrained_model.save_pretrained(save_directory, state_dict=body)
                save_file(head, f"{save_directory}/value_head.safetensors", metadata={"format": "pt"})
            self.tokenizer.save_pretrained(save_directory)
            if self.critic is not None:
                inner = None if critic_full is None else {k.removeprefix("model."): v for k, v in critic_full.items()
                                                          if k.startswith("model.")}  # CriticModel wraps .model
                self.critic.save_pretrained(f"{save_directory}/critic", **({"state_dict": inner} if inner else {}))
        return write


    # ================================================================== TRL 0.11.4's helper methods
    # Scripts written for TRL call these directly, with TRL's names, arguments and full-sequence
    # layout (query + response padded together). step() does not call them: it runs the same math
    # on the response-only layout above, so overriding one in a subclass does not change step().
    def _step_safety_checker(self, batch_size, queries, responses, scores, masks=None):
        """step()'s input checks under TRL's name; returns (queries, responses, scores, masks) as lists."""
        q, r, s, m = check_step_inputs(queries, responses, scores, masks, batch_size, self.max_length,
                                       self.current_device, self.vocab_size)
        return q, r, list(s.unbind()), m

    def prepare_model_inputs(self, queries, responses) -> dict:
        """Padded ``input_ids``/``attention_mask`` of query+response, on the tokenizer's padding side
        (encoder-decoder: the queries, plus ``decoder_input_ids``/``decoder_attention_mask`` of the
        responses), on the trainer's device."""
        def pad(seqs):
            features = [{"input_ids": s, "attention_mask": torch.ones_like(s)} for s in seqs]
            batch = (self.training_data_collator(features) if self.training_data_collator is not None
                     else self.tokenizer.pad(features, return_tensors="pt"))
            return {k: v.to(self.current_device) for k, v in batch.items() if k != "labels"}  # no LM loss wanted

        if self.is_encoder_decoder:
            inputs, decoder = pad(list(queries)), pad(list(responses))
            inputs["decoder_input_ids"] = decoder["input_ids"]
            inputs["decoder_attention_mask"] = decoder["attention_mask"]
            return inputs
        return pad([torch.cat([q, r]) for q, r in zip(queries, responses)])

    @PPODecorators.empty_device_cache()
    def batched_forward_pass(self, model, queries, responses, model_inputs, return_logits: bool = False,
                             response_masks=None):
        """``(logprobs, logits or None, values, masks)`` of the whole padded sequences, each (B, L-1)
        (logits (B, L-1, V)), in chunks of ``mini_batch_size``; ``masks`` is 1 on the positions that
        predict a response token (times ``response_masks``).

        Unlike TRL, left-padded rows get position ids that skip the padding, so a padded row
        computes what it computes alone; the model's train/eval mode is restored after; and for
        an encoder-decoder the first generated token counts too (TRL masked it out).
        """
        chunk, seq2seq = self.config.mini_batch_size, self.is_encoder_decoder
        was_training = model.training
        model.eval()
        parts = []
        try:
            for start in range(0, len(queries), chunk):
                inputs = {k: v[start:start + chunk] for k, v in model_inputs.items()}
                ids = inputs["decoder_input_ids"] if seq2seq else inputs["input_ids"]
                attn = inputs["decoder_attention_mask"] if seq2seq else inputs["attention_mask"]
                if not seq2seq and bool((attn[:, 0] == 0).any()) and "position_ids" not in inputs:
                    inputs["position_ids"] = (attn.cumsum(-1) - 1).clamp_min(0)  # (b, L)
                with self.mechanics.autocast():
                    logits, _, values = model(**inputs)  # (b, L, V), (b, L)
                    logprobs = algos.logprobs_from_logits(logits[:, :-1], ids[:, 1:])  # (b, L-1)
                masks = torch.zeros_like(attn)  # (b, L)
                masks[:, :-1] = attn[:, 1:]
                for j in range(len(ids)):
                    i = start + j
                    if seq2seq:  # position 0 (the start token) predicts the first response token
                        first, end = 0, int(attn[j].sum()) - 1
                    else:
                        first = len(queries[i]) - 1 + int(attn[j].nonzero()[0])  # offset of left padding
                        end = first + len(responses[i])
                    masks[j, :first] = 0
                    masks[j, end:] = 0
                    if response_masks is not None:
                        masks[j, first:end] = masks[j, first:end] * response_masks[i].to(masks)
                parts.append((logprobs, logits[:, :-1] if return_logits else None, values[:, :-1], masks[:, :-1]))
        finally:
            model.train(was_training)
        logprobs, logits, values, masks = zip(*parts)
        return torch.cat(logprobs), (torch.cat(logits) if return_logits else None), torch.cat(values), torch.cat(masks)

    def _kl_penalty(self, logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
        """Per-token KL estimate of ``config.kl_penalty``; for "full" the inputs are log-probs (..., V)."""
        if self.config.kl_penalty == "full":
            return algos.kl_full(logprob, ref_logprob)
        return algos.kl_penalty(logprob, ref_logprob, self.config.kl_penalty)

    def compute_rewards(self, scores, logprobs, ref_logprobs, masks):
        """``(rewards, non_score_rewards, kls)``, each (B, T): ``-beta * kl`` per token plus the score on
        the last masked-in token."""
        kls = self._kl_penalty(logprobs, ref_logprobs)  # (B, T)
        non_score = -self.kl_ctl.value * kls  # (B, T)
        score_only, _ = algos.kl_penalized_rewards(torch.as_tensor(scores).to(kls), torch.zeros_like(kls), masks, 0.0)
        return non_score + score_only, non_score, kls

    def compute_advantages(self, values, rewards, mask):
        """``(values * mask, advantages, returns)`` by GAE; advantages whitened (``whiten_advantages``)."""
        mask = mask.to(values.dtype)
        values, rewards = values * mask, rewards * mask
        advantages, returns = self._advantages(rewards, values, mask)  # (B, T) each
        return values, advantages.detach(), returns

    def loss(self, old_logprobs, values, logits, vpreds, logprobs, mask, advantages, returns):
        """``(policy_loss, vf_coef * value_loss, stats)`` with TRL's flat stat names, all (B, T) inputs; a
        minibatch whose mean ratio exceeds ``ratio_threshold`` gets zero losses (and a warning)."""
        cfg = self.config
        mask = mask.to(logprobs.dtype)
        pg_loss, pg = algos.policy_loss(logprobs, old_logprobs, advantages, mask, cfg.cliprange, cfg.dual_clip)
        vf_loss, vf = algos.value_loss(vpreds, values, returns, mask, cfg.cliprange_value)
        loss = pg_loss + cfg.vf_coef * vf_loss
        if float(pg["ratio_mean"]) > cfg.ratio_threshold:
            warnings.warn(f"The average ratio of batch ({float(pg['ratio_mean']):.2f}) exceeds threshold "
                          f"{cfg.ratio_threshold:.2f}. Skipping batch.", stacklevel=2)
            pg_loss, vf_loss, loss = pg_loss * 0.0, vf_loss * 0.0, loss * 0.0
        stats = {
            "loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(), "loss/total": loss.detach(),
            # (B, T) "logits" (TRL's own test passes them) give one entropy per row, broadcast as in TRL
            "policy/entropy": algos.masked_mean(algos.entropy_from_logits(
                logits.detach() if logits.dim() == 3 else logits.detach().unsqueeze(1)), mask),
            "policy/approxkl": pg["approxkl"], "policy/policykl": pg["policykl"], "policy/clipfrac": pg["clipfrac"],
            "policy/advantages": advantages.detach(),
            "policy/advantages_mean": algos.masked_mean(advantages, mask).detach(),
            "policy/ratio": pg["ratio"],
            "returns/mean": algos.masked_mean(returns, mask).detach(),
            "returns/var": algos.masked_var(returns, mask).detach(),
            "val/vpred": vf["vpred"], "val/error": vf["error"], "val/clipfrac": vf["clipfrac"],
            "val/mean": algos.masked_mean(values, mask).detach(), "val/var": algos.masked_var(values, mask).detach(),
        }
        return pg_loss, cfg.vf_coef * vf_loss, stats

    def train_minibatch(self, old_logprobs, values, logprobs, logits, vpreds, mask, advantages, returns) -> dict:
        """One gradient step on ``loss(...)`` (clipping, accumulation and ``optimizer.zero_grad()`` included)."""
        self._set_train(True)
        loss_p, loss_v, stats = self.loss(old_logprobs, values, logits, vpreds, logprobs, mask, advantages, returns)
        self.mechanics.backward(loss_p + loss_v)
        self.mechanics.optimizer_step(self._stepped, self.params)
        return stats

    def record_step_stats(self, kl_coef: float, **data) -> dict:
        """TRL's step statistics from ``scores, logprobs, ref_logprobs, non_score_reward, masks, kls,
        queries, responses, train_stats`` (each train stat stacked over minibatches, averaged here)."""
        train = {k: torch.as_tensor(v).float().mean(0) for k, v in data["train_stats"].items()}
        return ppo_stats.record_step_stats(
            scores=data["scores"], raw_scores=data.get("raw_scores", data["scores"]), logprobs=data["logprobs"],
            ref_logprobs=data["ref_logprobs"], kl=data["kls"], non_score_reward=data["non_score_reward"],
            mask=data["masks"], kl_coef=kl_coef, queries=data["queries"], responses=data["responses"],
            train_stats=train, to_host=False)

    def gather_stats(self, stats: dict) -> dict:
        """Average every tensor stat over processes (identity in a single process)."""
        if not self.is_distributed:
            return stats
        return {k: self.accelerator.reduce(v.to(self.accelerator.device), "mean") if isinstance(v, torch.Tensor)
                else v for k, v in stats.items()}


def _padded(rows: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Per-response 1-D tensors as a (B, R) tensor shaped and typed like ``like``, zero-padded on the right."""
    out = torch.zeros_like(like)  # (B, R)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row.to(like)
    return out


def _disable_dropout(model) -> None:
    if model is None:
        return
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
