"""PPOTrainer: the classic ``generate`` / ``step(queries, responses, scores)`` API.

Reads top to bottom like the algorithm (Ziegler et al. 2019; Stiennon et al. 2020):
score -> per-token KL-penalised rewards -> GAE -> ``ppo_epochs`` passes of clipped
policy and value losses over shuffled minibatches. The math is in ``rlhfkit.algos``, the
batch layout in ``ppo_batch``, sampling in ``ppo_generate``, the optimiser/logging
mechanics in ``mechanics``.
"""

from __future__ import annotations

import inspect
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
from ..rollout import build_batch, build_seq2seq_batch, forward_batch
from ..rollout.decode import RolloutCache
from . import ppo_classic, ppo_generate
from .mechanics import Mechanics, build_optimizer, set_seed
from .ppo_batch import check_step_inputs, check_train_inputs, check_trainer_inputs, max_positions, vocab_size
from .ppo_classic import gae_advantages
from .ppo_config import PPOConfig
from .ppo_stats import PTXStream, record_step_stats, summarise_minibatches


class PPOTrainer:
    """``PPOTrainer(config, model, ref_model=None, tokenizer=None, dataset=None, optimizer=None,
    data_collator=None, num_shared_layers=None, lr_scheduler=None, training_data_collator=None)``,
    as in the classic API (TRL 0.11.4's argument order, checks and warnings).

    ``num_shared_layers`` (no ``ref_model``): the reference shares, and the policy freezes,
    the embeddings and first N layers (``create_reference_model``). ``optimizer`` and
    ``lr_scheduler`` become Accelerate's wrappers (``trainer.optimizer.optimizer`` is yours).
    rlhfkit extras (keyword-only): ``critic`` (a ``CriticModel`` used instead of the shared
    value head, trained with ``config.critic_learning_rate``) and ``ptx_dataset`` (texts or
    ``input_ids`` for the SFT loss mixed in with ``config.ptx_coef``) and ``rollout_engine`` (a
    ``rlhfkit.rollout.vllm.VLLMRollout``: ``generate`` samples with it, and every ``step`` pushes the
    updated weights into it; untested on GPU hardware, see docs/ppo.md).
    """

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
        optimizer = optimizer or self._default_optimizer()
        self.dataset = dataset
        self.data_collator = data_collator
        self.training_data_collator = training_data_collator
        prepared = self.accelerator.prepare(*(m for m in (model, critic, optimizer) if m is not None))
        self._train_model = prepared[0]
        self._train_critic = prepared[1] if critic is not None else None
        self._collect_params()  # FSDP2 swapped in sharded parameters: the lists taken above are stale
        self.mechanics.register_generate(self._train_model)  # generate() through FSDP2's root hooks
        # Accelerate's wrappers, as TRL: `trainer.optimizer.optimizer` is the user's optimiser
        self.optimizer = prepared[-1]
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
        self.max_length = max_positions(model.config)
        self.vocab_size = vocab_size(model)
        self.rollout_engine = rollout_engine
        # sampling-time log-probs/values reused as the old policy's (docs/ppo.md, detail 27)
        self._rollout_cache, self._policy_version, self._reuse_verified = RolloutCache(), 0, False
        self._reuse_rollouts = bool(config.reuse_rollout_logprobs)
        if rollout_engine is not None:  # the engine may have loaded other weights than this policy's
            rollout_engine.sync_weights(self.accelerator.unwrap_model(self._train_model))

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

    def _default_optimizer(self):
        """Adam over the policy (with the shared head); a separate critic gets its own learning rate."""
        config = self.config
        groups = [{"params": self.policy_params, "lr": config.learning_rate}]
        if self.critic is not None:
            groups.append({"params": self.value_params, "lr": config.critic_learning_rate or config.learning_rate})
        return build_optimizer(groups, config.optimizer, config.learning_rate, config.weight_decay)

    # ------------------------------------------------------------------ data
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

    # ------------------------------------------------------------------ generation
    generate = ppo_generate.generate  # (query_tensor, length_sampler=None, batch_size=4, return_prompt=True, ...)

    def step(self, queries, responses, scores, response_masks=None) -> dict:
        """One PPO update on ``batch_size`` scored rollouts; returns the classic stats dict."""
        cfg, timing, t0 = self.config, {}, time.time()
        queries, responses, scores, response_masks = check_step_inputs(
            queries, responses, scores, response_masks, cfg.batch_size, self.max_length, self.accelerator.device,
            self.vocab_size)
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
        timing["time/ppo/compute_rewards"] = time.time() - t
        t = time.time()
        advantages, returns = gae_advantages(cfg, rewards, values, mask)  # (B, R) each
        timing["time/ppo/compute_advantages"] = time.time() - t

        t = time.time()
        rollout = dict(logprobs=logprobs, values=values * mask, advantages=advantages, returns=returns)
        minibatch_stats = self._optimize(batch, rollout)
        self._policy_version += 1  # rollouts sampled before this update are stale
        timing["time/ppo/optimize_step"] = time.time() - t
        if self.rollout_engine is not None:  # the next rollouts must come from the updated policy
            t = time.time()
            self.rollout_engine.sync_weights(self.accelerator.unwrap_model(self._train_model))
            timing["time/ppo/weight_sync"] = time.time() - t

        t = time.time()
        train_stats = summarise_minibatches(minibatch_stats)
        stats = record_step_stats(scores=scores, raw_scores=raw_scores, logprobs=logprobs, ref_logprobs=ref_logprobs,
                                  kl=kl, non_score_reward=non_score_reward, mask=mask, kl_coef=kl_coef,
                                  queries=queries, responses=responses, train_stats=train_stats)
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
                    ref_logprobs, _, ref_logits = forward_batch(ref_model, chunk)
                logprobs, values, logits = ((ref_logprobs, ref_logprobs, None) if skip_policy
                                            else forward_batch(self._train_model, chunk, self._train_critic))
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

    def _check_cached(self, cached, logprobs, values, mask, tol: float = 1e-4) -> None:
        """First reuse: the sampled log-probs/values must equal the recomputed ones within ``tol``."""
        valid = mask.bool()
        gap = max(float((cached[0] - logprobs)[valid].abs().max()), float((cached[1] - values)[valid].abs().max()))
        self._reuse_verified = gap <= tol
        if not self._reuse_verified:
            self._reuse_rollouts = False
            warnings.warn(f"sampling-time log-probs/values differ from the recomputed ones by {gap:.2e} (> {tol}); "
                          "PPOTrainer recomputes them from now on", stacklevel=3)

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
                    self.optimizer.zero_grad(set_to_none=True)
                    return all_stats
        return all_stats

    def _train_minibatch(self, mb, old: dict, critic_warmup: bool) -> dict:
        cfg = self.config
        R = mb.response_length
        old = {k: v[:, :R] for k, v in old.items()}
        with self.mechanics.autocast():
            logprobs, vpreds, logits = forward_batch(self._train_model, mb, self._train_critic)
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
        self.mechanics.optimizer_step(self.optimizer, self.params, skip_backward=skip)
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

    # ------------------------------------------------------------------ classic helpers (TRL 0.11 layout)
    # Scripts call these directly; they live in ppo_classic.py (functions of the trainer, shared here
    # as methods). step() runs the same math on rlhfkit's response-only layout, so overriding them
    # in a subclass does not change step().
    _step_safety_checker = ppo_classic.step_safety_checker
    prepare_model_inputs = ppo_classic.prepare_model_inputs
    batched_forward_pass = ppo_classic.batched_forward_pass
    _kl_penalty = ppo_classic.kl_penalty
    compute_rewards = ppo_classic.compute_rewards
    compute_advantages = ppo_classic.compute_advantages
    loss = ppo_classic.loss
    train_minibatch = ppo_classic.train_minibatch
    record_step_stats = ppo_classic.record_step_stats
    gather_stats = ppo_classic.gather_stats

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
        """Run the whole loop with a reward function; see ``rlhfkit.trainers.ppo_train.train_ppo``."""
        from .ppo_train import train_ppo

        check_train_inputs(reward_fn, prompts)  # before any model work
        return train_ppo(self, reward_fn, prompts, **kwargs)

    def save_pretrained(self, save_directory) -> None:
        """Save the policy (Transformers checkpoint + value head), the tokenizer and a separate critic.

        Under FSDP2 / ZeRO-3 every process must call it: the sharded weights are gathered first."""
        full = self.mechanics.full_state_dict(self._train_model)  # None unless sharded; a collective then
        critic_full = self.mechanics.full_state_dict(self._train_critic) if self._train_critic is not None else None
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self._train_model)
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


def _disable_dropout(model) -> None:
    if model is None:
        return
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
