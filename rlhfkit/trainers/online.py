"""The critic-free online loop shared by GRPO, RLOO and REINFORCE++: rollout -> score -> advantages -> updates.

One generation cycle (TRL 1.x's layout; ``B = per_device_train_batch_size`` completions):

    prompts  = next P prompts (seeded per-epoch order), each repeated G = num_generations times
    rollout  = generate N = P * G completions (no grad, eval mode)     N = B * steps_per_generation
    rewards  = score(reward_funcs, weights, prompts, completions, columns)         # (N,)
    old, ref = response log-probs of the policy (when needed) and of the reference (beta > 0)
    adv      = method.advantages(rewards, old, ref, mask, gather)                      # (N,) or (N, R)
    repeat num_iterations times: for each of the steps_per_generation chunks of B rows:
        loss = method.loss(logprobs, old or logprobs.detach(), ref, adv, mask)    -> backward
        one optimiser step every gradient_accumulation_steps chunks

A method (``grpo.py``, ``rloo.py``) supplies ``advantages`` and ``loss`` through :class:`Method`;
``OnlineRun`` owns generation and scoring (``rollout.evaluate.sample_and_score``), the reference,
Accelerate/optimiser/logging (``Mechanics``), the progress bar, evaluation
(``rollout.evaluate.evaluate_policy``) and checkpoints. It is used by composition, never
subclassed; ``build`` fills a trainer (``GRPOTrainer``, ``RLOOTrainer``) with one. A checkpoint
holds the weights, optimiser, scheduler, prompt sampler, cycle count and every RNG as they were
at the end of a cycle (``_boundary``). Checkpoints are written at the end of a generation cycle (the
first one at or after each ``save_steps`` multiple): a cycle's rollout is not saved, so a
resumed run regenerates from the restored RNG exactly as the uninterrupted run did. Ctrl-C
writes a checkpoint of the last cycle boundary when no optimiser step has happened since (with
the default one step per generation, always); in the middle of a multi-step cycle it writes
none and says which checkpoint to resume from.

With ``async_generation`` the rollout's first half (``_generate``: prompts, sampling, scoring,
the sampler's log-probs) runs in ``online_async.RolloutProducer``'s thread on a snapshot of the
policy, and the trainer finishes each rollout it takes (``_finish_rollout``: old and reference
log-probs, advantages), dropping those more than ``max_staleness`` versions old; docs/online.md
("Asynchronous training") has the correction and the resume rule.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..algos import entropy_from_logits
from ..models.compat import enable_checkpointing
from ..models.fused import fuse_activations
from ..models.reference import create_reference_model, is_peft_model, reference_context
from ..rollout import build_batch, packed_response_forward, require_padding_free, response_logprobs
from ..rollout.agents import Agent, environment_reward, episode_metrics, sample_episodes
from ..rollout.evaluate import Sampled, evaluate_policy, reward_name, sample_and_score
from ..rollout.prompts import PromptSampler
from ..rollout.rewards import RewardFunc, load_function, score
from ..rollout.sampling import Completions, build_engine, engine_gap, padded_rows
from . import checkpoint, completion_log
from .config import ConfigError
from .mechanics import Mechanics, build_optimizer, param_groups, schedule, set_seed
from .online_async import RolloutProducer
from .online_config import prepare
from .trackers import resolve_trackers

REFERENCE_FILE = "reference_model.safetensors"  # with sync_ref_model: the reference moves, so it is saved
# how a logging window of several steps folds a metric (default: the mean)
WINDOW_REDUCE = {"async/staleness_max": torch.max, "async/dropped": torch.sum}


@dataclass
class Method:
    """What a critic-free method supplies to :class:`OnlineRun` (plain functions, no hooks).

    ``advantages(rewards (N,), old (N, R) | None, ref (N, R) | None, mask (N, R), gather) -> (adv, metrics)``
    with ``adv`` (N,) or (N, R); ``gather(t (N,)) -> (N * processes,)`` concatenates a tensor over
    processes (identity on one), for statistics TRL takes over the global batch.
    ``loss(logprobs, old, ref, adv, mask, num_items, entropy=, gather_tokens=, sampling=) -> (loss,
    metrics)`` on one chunk of rows; the keywords are the chunk's token entropies (B, R), a gather
    of 1-D tensors of any length, and the rollout engine's log-probs (B, R) or None (GRPO's
    ``top_entropy_quantile`` and engine correction; a method may ignore them). ``reference``: a
    frozen reference is needed; ``old_logprobs``: the advantages need the sampling policy's
    log-probs (a KL in the reward).
    """
    name: str
    advantages: Callable
    loss: Callable
    reference: bool = False
    old_logprobs: bool = False
    engine_correction: bool = False  # with a rollout engine: loss(..., sampling=engine log-probs) and old log-probs


@dataclass
class Rollout:
    batch: object                    # RolloutBatch (N rows)
    advantages: torch.Tensor         # (N,) or (N, R)
    old: torch.Tensor | None         # (N, R) policy log-probs at sampling time, or None (= on-policy)
    ref: torch.Tensor | None         # (N, R) reference log-probs, or None
    metrics: dict                    # per-cycle scalars (reward, lengths, ...)
    sampling: torch.Tensor | None = None  # (N, R) the rollout engine's log-probs (NaN: unknown), or None

    def chunk(self, idx: torch.Tensor) -> dict:
        pick = (lambda t: t[idx] if t is not None else None)
        sub = self.batch.rows(idx)
        R = sub.response_length
        trim = (lambda t: t[:, :R] if t is not None and t.dim() == 2 else t)
        return {"batch": sub, "advantages": trim(pick(self.advantages)), "old": trim(pick(self.old)),
                "ref": trim(pick(self.ref)), "sampling": trim(pick(self.sampling))}


@dataclass
class Generated:
    """A generation before the trainer's forwards: what the async producer hands over (``online_async``)."""
    sampled: Sampled
    batch: object                    # RolloutBatch (N rows)
    truncated: torch.Tensor          # (N,) bool: cut at max_completion_length
    policy: list                     # N masks, 1 on the tokens the policy wrote
    behaviour: torch.Tensor | None   # (N, R) the sampling snapshot's log-probs, or None (sampled by the policy)
    sampler_state: dict              # the prompt sampler after this generation's prompts


class OnlineRun:
    """Train ``model`` with ``method`` on ``prompts`` scored by ``reward_funcs``; see the module docstring."""

    def __init__(self, config, model, tokenizer, method: Method, reward_funcs: list, score_fn: Callable,
                 prompts: list, columns: dict, eval_prompts: list | None = None, eval_columns: dict | None = None,
                 ref_model=None, rollout_engine=None, agent=None):
        self.config, self.method, self.tokenizer = config, method, tokenizer
        self.reward_funcs, self.score_fn = reward_funcs, score_fn
        self.prompts, self.columns = prompts, columns
        self.eval_prompts, self.eval_columns = eval_prompts, eval_columns or {}
        self.agent = agent  # rollout.agents.Agent: multi-turn episodes with tools / environments, or None
        self.reward_weights = config.reward_weights
        if agent is not None and agent.rewarded and self.reward_weights is not None and \
                len(self.reward_weights) == len(reward_funcs) - 1:
            self.reward_weights = [*self.reward_weights, 1.0]  # the environment's reward (build appends it)
        if agent is not None:
            agent.check_columns(columns, len(prompts), "the training prompts")
            if eval_prompts:
                agent.check_columns(self.eval_columns, len(eval_prompts), "the eval prompts")
        self.output_dir = Path(config.output_dir)
        set_seed(config.seed)
        trackers = resolve_trackers(config.report_to)  # metrics.jsonl is written whatever report_to says
        self.mechanics = Mechanics(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_grad_norm=config.max_grad_norm, log_with=trackers,
            logging_dir=str(self.output_dir), tracker_config=config.to_dict(), jsonl=True,
            micro_batch_size=config.per_device_train_batch_size)
        self.accelerator = self.mechanics.accelerator
        if config.gradient_checkpointing:
            enable_checkpointing(model)
        if config.fuse_activations:
            fuse_activations(model)
        self.ref_model = None
        if method.reference and not is_peft_model(model):  # under PEFT the adapter-disabled policy is the reference
            # copied before prepare: FSDP2 turns the policy's parameters into shards in place
            self.ref_model = ref_model if ref_model is not None else create_reference_model(model)
            self.ref_model.eval().requires_grad_(False).to(self.accelerator.device)
        if config.padding_free:  # before prepare wraps or shards the policy: refuse a model that cannot pack
            for m in (model, self.ref_model):
                if m is not None:
                    require_padding_free(m)
        optimizer = build_optimizer(param_groups(model, config.weight_decay), config.optim, config.learning_rate,
                                    config.weight_decay, betas=(config.adam_beta1, config.adam_beta2),
                                    eps=config.adam_epsilon)
        self.model, self.optimizer, self.params = self.mechanics.prepare(model, optimizer)
        if config.sync_ref_model:
            self._check_sync_ref_model(method)
        world = self.accelerator.num_processes
        self.prompts_per_cycle = config.per_device_train_batch_size * config.steps_per_generation * world \
            // config.num_generations
        self.steps_per_cycle = config.steps_per_generation * config.num_iterations // \
            config.gradient_accumulation_steps
        per_epoch = max(1, math.ceil(len(prompts) / self.prompts_per_cycle)) * self.steps_per_cycle
        self.total_steps = config.max_steps if config.max_steps > 0 else math.ceil(per_epoch * config.num_train_epochs)
        self.scheduler = schedule(config, self.optimizer, self.total_steps)
        self.sampler = PromptSampler(len(prompts), config.seed)
        self.global_step, self.cycles = 0, 0
        self._cycle_done = False  # every optimiser step of the current generation has happened
        self._samples: list[dict] = []  # the current generation's rows for log_completions
        self.history: list[dict] = []
        if rollout_engine is None and config.use_vllm:
            rollout_engine = build_engine(config, self.accelerator.unwrap_model(self.model))
        self.completions = Completions(tokenizer, self._generation_kwargs(), rollout_engine)
        self._producer: RolloutProducer | None = None  # async_generation's sampling thread while train() runs
        self._sampler_state: dict | None = None  # async: the sampler after the last rollout trained on
        if config.async_generation:
            self._check_async(rollout_engine, agent)
        self.completions.sync(self.accelerator.unwrap_model(self.model), self.global_step)

    def _check_sync_ref_model(self, method: Method) -> None:
        owner = type(self.config).__name__
        if not method.reference:
            raise ConfigError(owner, "sync_ref_model", "needs beta > 0: with beta = 0 no reference model is kept")
        if self.ref_model is None:
            raise ConfigError(owner, "sync_ref_model", "is not supported with a LoRA/PEFT policy: its reference is the "
                                                       "adapter-disabled base model, which has no weights of its own")
        if self.mechanics.sharded:
            raise ConfigError(owner, "sync_ref_model", "is not supported under FSDP/DeepSpeed (sharded policy weights)")

    def _check_async(self, rollout_engine, agent) -> None:
        owner = type(self.config).__name__
        if rollout_engine is not None:
            raise ConfigError(owner, "async_generation", "cannot run with a rollout engine (rollout_engine= / "
                                                         "use_vllm): the producer samples with Hugging Face generate "
                                                         "from its own snapshot; set async_generation=false")
        if agent is not None:
            raise ConfigError(owner, "async_generation", "does not support multi-turn rollouts (tools= or "
                                                         "environment_factory= given): set async_generation=false")
        if self.accelerator.num_processes > 1 or self.mechanics.sharded:
            raise ConfigError(owner, "async_generation", "runs in a single process only (each process would drop "
                                                         "stale rollouts on its own and the processes' steps would "
                                                         "diverge); set async_generation=false under accelerate "
                                                         "launch")

    @torch.no_grad()
    def _sync_reference(self) -> None:
        """TR-DPO's soft update, ref <- alpha * policy + (1 - alpha) * ref (Gorbatovski et al. 2024, arXiv:2404.09656)."""
        alpha = self.config.ref_model_mixup_alpha
        policy = dict(self.accelerator.unwrap_model(self.model).named_parameters())
        for name, ref in self.ref_model.named_parameters():
            ref.mul_(1.0 - alpha).add_(policy[name].detach().to(ref.dtype), alpha=alpha)

    # ------------------------------------------------------------------ rollout
    def _generation_kwargs(self) -> dict:
        cfg = self.config
        kwargs = dict(do_sample=True, max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                      top_p=cfg.top_p, top_k=cfg.top_k, repetition_penalty=cfg.repetition_penalty,
                      eos_token_id=self.tokenizer.eos_token_id)
        if cfg.min_p is not None:
            kwargs["min_p"] = cfg.min_p
        return {**kwargs, **(cfg.generation_kwargs or {})}

    @torch.no_grad()
    def _sample(self, prompts: list, columns: dict, G: int, policy=None, completions: Completions | None = None
                ) -> Sampled:
        """G completions (multi-turn: episodes) per prompt, generated and scored; from the policy being
        trained unless ``policy`` (an async snapshot) and its ``completions`` are given."""
        policy = policy if policy is not None else self.accelerator.unwrap_model(self.model)
        completions = completions or self.completions
        if self.agent is not None:
            return sample_episodes(policy, self.tokenizer, completions, self.agent, self.reward_funcs, prompts,
                                   columns, G, reward_weights=self.reward_weights, device=self.accelerator.device,
                                   step=self.global_step, score_fn=self.score_fn)
        return sample_and_score(policy, self.tokenizer, completions, self.reward_funcs, prompts, columns, G,
                                reward_weights=self.reward_weights, max_prompt_length=self.config.max_prompt_length,
                                device=self.accelerator.device, step=self.global_step, score_fn=self.score_fn)

    def _forward_logprobs(self, model, batch, chunk: int) -> torch.Tensor:
        """No-grad response log-probs (N, R) in chunks of ``chunk`` rows, eval mode."""
        was = model.training
        model.eval()
        try:
            R = batch.response_length
            out = torch.zeros(batch.response_ids.shape, dtype=torch.float32, device=batch.response_ids.device)
            for start in range(0, batch.response_ids.shape[0], chunk):
                idx = torch.arange(start, min(start + chunk, batch.response_ids.shape[0]), device=out.device)
                sub = batch.rows(idx)
                lp = self._response_forward(model, sub, no_logits=True)[0]
                out[idx, :sub.response_length] = lp.float()
            return out[:, :R]
        finally:
            model.train(was)

    def _response_forward(self, model, batch, no_logits: bool = False):
        """(log-probs (B, R), entropy (B, R) or None) of the response tokens, padded or padding-free.

        The forward runs under autocast; the entropies after it, without grad and in blocks of 64
        positions (no (B, R, V) temporaries beside the logits). ``no_logits`` skips them.
        """
        cfg = self.config
        with self.mechanics.autocast():
            if cfg.padding_free:
                out = packed_response_forward(model, batch, temperature=cfg.temperature,
                                              max_packed_length=cfg.max_packed_length, where="the online update")
                logprobs, logits = out.logprobs, out.logits  # (B, R), (n, V) packed
            else:
                logprobs, logits = response_logprobs(model, batch, temperature=cfg.temperature, with_logits=True)
        if no_logits:
            return logprobs, None
        with torch.no_grad():
            if cfg.padding_free:
                return logprobs, out.unpack(entropy_from_logits(logits.detach()[None], chunk_size=64)[0])  # (B, R)
            return logprobs, entropy_from_logits(logits.detach(), chunk_size=64)  # (B, R)

    def _needs_old(self) -> bool:
        """Old log-probs are computed when the ratio is off-policy, a KL sits in the reward, or on logging cycles."""
        cfg = self.config
        off_policy = cfg.num_iterations > 1 or cfg.steps_per_generation > cfg.gradient_accumulation_steps
        logging_cycle = (self.global_step // cfg.logging_steps) != ((self.global_step + self.steps_per_cycle)
                                                                    // cfg.logging_steps)
        engine = self.completions.engine is not None and self.method.engine_correction
        return off_policy or self.method.old_logprobs or logging_cycle or cfg.recompute_old_logprobs or engine or \
            cfg.async_generation

    @torch.no_grad()
    def rollout(self) -> Rollout:
        """One generation from the policy being trained, scored, with its log-probs and advantages."""
        return self._finish_rollout(self._generate(self.accelerator.unwrap_model(self.model), self.completions))

    @torch.no_grad()
    def _generate(self, policy, completions: Completions, behaviour: bool = False) -> Generated:
        """The next prompts' completions from ``policy``, scored and laid out (``behaviour``: with ``policy``'s
        log-probs of the sampled tokens, for a snapshot that samples in another thread)."""
        cfg, G = self.config, self.config.num_generations
        # every process draws the same global order and keeps its own slice: whole groups stay on one process
        local = self.prompts_per_cycle // self.accelerator.num_processes
        rank = self.accelerator.process_index
        idx = self.sampler.take(self.prompts_per_cycle)[rank * local:(rank + 1) * local]
        prompts = [self.prompts[i] for i in idx]
        columns = {k: [v[i] for i in idx] for k, v in self.columns.items()}
        sampled = self._sample(prompts, columns, G, policy, completions)
        queries, responses, rewards = sampled.queries, sampled.responses, sampled.rewards
        eos = self.tokenizer.eos_token_id
        if sampled.masks is not None:  # episodes: the policy's tokens only; truncated = cut by the token cap
            truncated = torch.tensor(sampled.truncated, device=rewards.device)  # (N,)
            policy_masks = [m.to(r.device) for m, r in zip(sampled.masks, responses)]
        else:
            truncated = torch.tensor([int(r[-1]) != eos for r in responses], device=rewards.device)  # (N,)
            policy_masks = [torch.ones(len(r), device=r.device) for r in responses]
        masks = [m * (0.0 if (cfg.mask_truncated_completions and t) else 1.0)
                 for m, t in zip(policy_masks, truncated.tolist())]
        batch = build_batch(queries, responses, masks, self.tokenizer.pad_token_id)
        sampling = self._forward_logprobs(policy, batch, cfg.per_device_train_batch_size) if behaviour else None
        return Generated(sampled, batch, truncated, policy_masks, sampling, self.sampler.state_dict())

    @torch.no_grad()
    def _finish_rollout(self, generated: Generated) -> Rollout:
        """Old and reference log-probs, advantages and metrics of a generation, by the policy as it is now."""
        cfg = self.config
        sampled, batch, truncated, policy = generated.sampled, generated.batch, generated.truncated, generated.policy
        rewards, per_func = sampled.rewards, sampled.per_func
        chunk = cfg.per_device_train_batch_size
        old = self._forward_logprobs(self.model, batch, chunk) if self._needs_old() else None
        ref = None
        if self.method.reference:
            with reference_context(self.accelerator.unwrap_model(self.model), self.ref_model):
                ref = self._forward_logprobs(self.ref_model or self.model, batch, chunk)
        gather = self.accelerator.gather if self.accelerator.num_processes > 1 else (lambda t: t)
        advantages, adv_metrics = self.method.advantages(rewards, old, ref, batch.mask, gather)
        lengths = torch.stack([m.sum().float().cpu() for m in policy])  # (N,) tokens the policy wrote, as TRL
        done = lengths[~truncated.cpu()]
        metrics = {"reward": rewards.mean(), "reward_std": rewards.std() if len(rewards) > 1 else rewards.new_zeros(()),
                   "completions/mean_length": lengths.mean(), "completions/min_length": lengths.min(),
                   "completions/max_length": lengths.max(), "completions/clipped_ratio": truncated.float().mean(),
                   "completions/mean_terminated_length": done.mean() if len(done) else lengths.new_zeros(()),
                   **adv_metrics}
        for j, func in enumerate(self.reward_funcs):
            values = per_func[:, j].float()
            metrics[f"rewards/{reward_name(func, j)}/mean"] = torch.nanmean(values)
        if sampled.episodes is not None:
            metrics.update(episode_metrics(sampled.episodes))
        sampling = None
        if sampled.engine_logprobs is not None and old is not None:
            engine = padded_rows(sampled.engine_logprobs, old)  # (N, R)
            metrics.update(engine_gap(old, engine, batch.mask))
            sampling = engine if self.method.engine_correction else None
        if generated.behaviour is not None:  # sampled by a stale snapshot (async_generation)
            metrics.update(engine_gap(old, generated.behaviour, batch.mask))
            if self.method.engine_correction:  # ratio to the policy now, weighted by exp(old - behaviour)
                sampling = generated.behaviour
            else:  # no correction: the clipped ratio is taken to the behaviour policy itself
                old = generated.behaviour
        if cfg.log_completions:
            names = [reward_name(func, j) for j, func in enumerate(self.reward_funcs)]
            self._samples = completion_log.samples(sampled.prompts, sampled.completions, rewards, per_func, names,
                                                   advantages, batch.mask)
        self.cycles += 1
        return Rollout(batch, advantages, old, ref, {k: torch.as_tensor(v).detach().float().cpu()
                                                     for k, v in metrics.items()}, sampling)

    # ------------------------------------------------------------------ updates
    def _chunks(self, n_rows: int) -> list[torch.Tensor]:
        """The rollout's rows shuffled once (seeded by the global RNG) and cut into steps_per_generation chunks."""
        order = torch.randperm(n_rows).to(self.accelerator.device)
        B = self.config.per_device_train_batch_size
        return [order[i:i + B] for i in range(0, n_rows, B)]

    def _update(self, model, part: dict, num_items: float, first_pass: bool) -> tuple[torch.Tensor, dict]:
        cfg = self.config
        batch = part["batch"]
        logprobs, entropy = self._response_forward(model, batch)
        logprobs = logprobs.float()  # (B, R)
        mask = batch.mask  # (B, R)
        old = part["old"] if part["old"] is not None else logprobs.detach()
        loss, metrics = self.method.loss(logprobs, old, part["ref"], part["advantages"], mask, num_items,
                                         entropy=entropy, gather_tokens=self._gather_tokens,
                                         sampling=part["sampling"])
        n = mask.sum().clamp_min(1)
        with torch.no_grad():
            metrics = dict(metrics)
            metrics["entropy"] = (entropy * mask).sum() / n
            metrics["num_tokens"] = mask.sum()
            if first_pass and part["old"] is not None:  # sampling-time vs training-time log-probs, same weights
                diff = (part["old"] - logprobs).abs() * mask
                metrics["sampling/logprob_diff_mean"] = diff.sum() / n
                metrics["sampling/logprob_diff_max"] = diff.max()
        return loss, metrics

    def _gather_tokens(self, values: torch.Tensor) -> torch.Tensor:
        """A 1-D tensor of every process, concatenated (lengths may differ: padded with NaN, then dropped)."""
        if self.accelerator.num_processes == 1:
            return values
        padded = self.accelerator.pad_across_processes(values, dim=0, pad_index=float("nan"))
        every = self.accelerator.gather(padded)
        return every[~every.isnan()]

    def _num_items(self, rollout: Rollout) -> float:
        """DAPO's normaliser as TRL 1.x: the real tokens of the whole generation (all processes) / processes.

        Divided by gradient_accumulation_steps too, because ``Mechanics.backward`` divides every
        micro-batch's loss by it again (TRL does not).
        """
        tokens = self.accelerator.reduce(rollout.batch.mask.sum().detach(), "sum")
        return max(float(tokens), 1.0) / (self.config.gradient_accumulation_steps * self.accelerator.num_processes)

    def _cycle(self, bar) -> None:
        cfg = self.config
        self._cycle_done = False
        rollout = self.rollout() if self._producer is None else self._async_rollout()
        chunks = self._chunks(rollout.batch.response_ids.shape[0])
        self.model.train()
        window: list[dict] = []
        num_items = self._num_items(rollout)
        for iteration in range(cfg.num_iterations):
            for n, idx in enumerate(chunks):
                loss, metrics = self._update(self.model, rollout.chunk(idx), num_items, iteration == 0)
                self.mechanics.backward(loss)
                window.append({"loss": loss.detach(), **{k: v.detach() for k, v in metrics.items()}})
                grad_norm = self.mechanics.optimizer_step(self.optimizer, self.params, self.scheduler)
                if self.mechanics.pending:
                    continue
                with checkpoint.sigint_deferred():  # a Ctrl-C lands before this step or after its log row
                    self.global_step += 1
                    if self._producer is not None and self.global_step % cfg.async_weight_sync_steps == 0:
                        self._producer.publish(self.accelerator.unwrap_model(self.model), self.global_step)
                    bar.update(1)
                    self._after_step(window, rollout.metrics, grad_norm, bar)
                    if cfg.sync_ref_model and self.global_step % cfg.ref_model_sync_steps == 0:
                        self._sync_reference()
                    self._cycle_done = self.global_step >= self.total_steps or \
                        (iteration == cfg.num_iterations - 1 and n == len(chunks) - 1)
                window = []
                if cfg.eval_steps and self.global_step % cfg.eval_steps == 0:
                    self.evaluate()
                if self.global_step >= self.total_steps:
                    return

    def _async_rollout(self) -> Rollout:
        """The producer's next rollout that is at most max_staleness policy versions old (older ones are dropped)."""
        dropped, waited = 0, 0.0
        while True:
            start = time.perf_counter()
            version, generated = self._producer.get()
            waited += time.perf_counter() - start
            staleness = self.global_step - version
            if staleness <= self.config.max_staleness:
                break
            dropped += 1
        self._sampler_state = generated.sampler_state  # a checkpoint resumes the prompt stream after this one
        rollout = self._finish_rollout(generated)
        rollout.metrics.update({"async/staleness_mean": torch.tensor(float(staleness)),
                                "async/staleness_max": torch.tensor(float(staleness)),
                                "async/dropped": torch.tensor(float(dropped)),
                                "async/queue_wait_seconds": torch.tensor(waited)})
        return rollout

    def _start_producer(self) -> None:
        """The sampling thread of async_generation, from the policy as it is now (after a resume: restored)."""
        self._sampler_state = self.sampler.state_dict()
        self._producer_completions = Completions(self.tokenizer, self._generation_kwargs())
        self._producer = RolloutProducer(
            self.accelerator.unwrap_model(self.model),
            lambda snapshot: self._generate(snapshot, self._producer_completions, behaviour=True),
            version=self.global_step, queue_size=self.config.async_queue_size,
            timeout_s=self.config.async_timeout_s)
        self._producer.start()

    def _stop_producer(self) -> None:
        """Stop the sampling thread; the prompt sampler goes back to after the last rollout trained on."""
        if self._producer is not None:
            self._producer.close()
            self._producer = None
            self.sampler.load_state_dict(self._sampler_state)

    def _after_step(self, window: list[dict], cycle_metrics: dict, grad_norm, bar) -> None:
        cfg, step = self.config, self.global_step
        self._window.append(({k: torch.stack([w[k].float() for w in window if k in w]).mean()
                              for k in {k for w in window for k in w}}, cycle_metrics, grad_norm))
        if step % cfg.logging_steps == 0 or step == self.total_steps:
            row = self._log(time.time() - self._t_last)
            self._t_last = time.time()
            bar.set_postfix(reward=f"{row.get('train/reward', float('nan')):.3f}",
                            loss=f"{row.get('train/loss', float('nan')):.4f}")
            if cfg.log_completions and self._samples:
                completion_log.write(self.output_dir, step, self._samples, cfg.num_completions_to_print,
                                     self.accelerator)
                self._samples = []  # a generation is written once, at the first logged step that trains on it

    def _log(self, seconds: float) -> dict:
        keys = {k for steps in self._window for part in steps[:2] for k in part}
        row = {}
        for k in sorted(keys):
            values = [part[k].to(self.accelerator.device) for steps in self._window for part in steps[:2] if k in part]
            value = WINDOW_REDUCE.get(k, torch.mean)(torch.stack(values).float())
            row[f"train/{k}"] = self.accelerator.reduce(value, "mean").item()
        norms = [float(g) for _, _, g in self._window if g is not None]
        if norms:
            row["train/grad_norm"] = sum(norms) / len(norms)
        row["train/learning_rate"] = self.scheduler.get_last_lr()[0]
        row["train/seconds_per_step"] = seconds / max(1, len(self._window))
        self._window = []
        return self.mechanics.record(row, self.global_step, self.history)

    # ------------------------------------------------------------------ the loop
    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        """Run to ``total_steps``; returns this call's logged rows. Writes the final model to ``output_dir``."""
        cfg = self.config
        self.mechanics.start(self.output_dir, resume_from_checkpoint or cfg.resume_from_checkpoint,
                             self.load_checkpoint, lambda: self.global_step,
                             logs=(self.output_dir / completion_log.FILE,))
        bar = self.mechanics.progress(self.total_steps, self.global_step, self.method.name, cfg.disable_tqdm)
        self._window, self._t_last = [], time.time()
        if cfg.async_generation and self.global_step < self.total_steps:
            self._start_producer()
        boundary = self._boundary()
        try:
            while self.global_step < self.total_steps:
                before = self.global_step
                self._cycle(bar)
                boundary = self._boundary()
                if cfg.save_steps and before // cfg.save_steps != self.global_step // cfg.save_steps:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            self._stop_producer()
            self._save_on_interrupt(boundary)
            raise
        finally:
            self._stop_producer()
            bar.close()
        if self.eval_prompts and not (cfg.eval_steps and self.global_step % cfg.eval_steps == 0):
            self.evaluate()
        self.save_model(self.output_dir)
        self.mechanics.finish(self.output_dir)
        return self.history

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Sample num_generations completions for every eval prompt and log their rewards (``eval/*``).

        No global RNG moves (``checkpoint.rng_preserved``): training is the same with or without it.
        """
        if not self.eval_prompts:
            return {}
        with checkpoint.rng_preserved(), (self._producer.paused() if self._producer is not None else nullcontext()):
            return self._evaluate()

    def _evaluate(self) -> dict:
        cfg = self.config
        row = evaluate_policy(self._sample, self.reward_funcs, self.eval_prompts, self.eval_columns,
                              num_generations=cfg.num_generations_eval or cfg.num_generations,
                              batch_size=cfg.per_device_eval_batch_size)
        return self.mechanics.record(row, self.global_step, self.history)

    # ------------------------------------------------------------------ saving and resuming
    def save_model(self, path) -> None:
        """The policy (and tokenizer) to ``path``, gathered whole under FSDP2 / ZeRO-3; every rank calls."""
        self.mechanics.save_model(path, self.mechanics.model_writer(self.model, tokenizer=self.tokenizer))

    def _checkpoint_writer(self):
        """The policy and tokenizer, and a reference that ``sync_ref_model`` moves (every rank calls)."""
        write = self.mechanics.model_writer(self.model, tokenizer=self.tokenizer)

        def writer(path: Path) -> None:
            write(path)
            if self.config.sync_ref_model:
                from safetensors.torch import save_model  # handles tied (shared) weights

                save_model(self.ref_model, str(Path(path) / REFERENCE_FILE))
        return writer

    def _boundary(self) -> dict:
        """What a checkpoint records at the end of a generation cycle (the state ``rollout`` starts from)."""
        # async: the producer has taken prompts ahead; a resume goes on after the last rollout trained on
        sampler = self._sampler_state if self._sampler_state is not None else self.sampler.state_dict()
        return {"global_step": self.global_step, "cycles": self.cycles, "sampler": sampler,
                "rng": checkpoint.rng_state(), "mechanics": self.mechanics.state_dict(),
                "metrics_offset": checkpoint.metrics_size(self.mechanics.metrics_path)}

    def _save_on_interrupt(self, last_boundary: dict) -> None:
        """Ctrl-C: checkpoint the cycle boundary the weights belong to, when there is one.

        Before a cycle's first optimiser step that is the last boundary; after its last one, the
        state now (an interrupted evaluation has put the RNG back, nothing else draws from it).
        """
        last = checkpoint.checkpoints(self.output_dir)
        point = self._boundary() if self.global_step != last_boundary["global_step"] and self._cycle_done \
            else last_boundary
        if self.global_step != point["global_step"]:
            where = f"resume from {last[-1]}" if last else "no checkpoint was written yet"
            print(f"interrupted inside a generation cycle, {self.global_step - point['global_step']} optimiser "
                  f"step(s) past its start: no exact checkpoint can be written here; {where}", file=sys.stderr)
            return
        if not last or last[-1].name != f"checkpoint-{self.global_step}":
            self.save_checkpoint(point)

    def save_checkpoint(self, point: dict | None = None) -> Path:
        """``checkpoint-<step>`` (layout in ``checkpoint``) at a cycle boundary (``point``: a past one), atomically."""
        point = point or self._boundary()
        method = {"global_step": self.global_step, "cycles": point["cycles"], "sampler": point["sampler"],
                  "prompt_count": len(self.prompts)}
        summary = {"trainer": self.method.name, "global_step": self.global_step, "config": self.config.to_dict()}
        return self.mechanics.save_checkpoint(
            self.output_dir, self.global_step, section="online", method_state=method, optimizer=self.optimizer,
            scheduler=self.scheduler, writer=self._checkpoint_writer(), summary=summary,
            limit=self.config.save_total_limit, rng=point["rng"], metrics_offset=point["metrics_offset"],
            mechanics_state=point["mechanics"])

    def load_checkpoint(self, path: Path) -> None:
        """Restore what ``save_checkpoint`` wrote into a freshly built run (same prompts and processes)."""
        path = Path(path)
        state = self.mechanics.read_checkpoint(path, self.method.name, "online")
        online = state["online"]
        if online["prompt_count"] != len(self.prompts):
            raise ValueError(f"the checkpoint {path} was trained on {online['prompt_count']} prompts, this run has "
                             f"{len(self.prompts)}; use the same dataset to resume (or start a new output_dir)")
        if self.config.sync_ref_model and not (path / REFERENCE_FILE).exists():
            raise ValueError(f"{path} has no {REFERENCE_FILE}: it was written without sync_ref_model; resume "
                             f"with the same sync_ref_model setting")

        def load_weights(folder: Path) -> None:
            checkpoint.load_model_weights(self.accelerator.unwrap_model(self.model), folder)  # LoRA: its adapter
            if self.config.sync_ref_model:  # the refreshed reference is part of the run's state
                from safetensors.torch import load_model

                load_model(self.ref_model, str(folder / REFERENCE_FILE))

        def restore_method(state: dict) -> None:
            self.global_step, self.cycles = state["online"]["global_step"], state["online"]["cycles"]
            self.sampler.load_state_dict(state["online"]["sampler"])

        self.mechanics.restore(path, state, load_weights=load_weights, optimizer=self.optimizer,
                               scheduler=self.scheduler, restore_method=restore_method, step=lambda: self.global_step)


def build(trainer, args, method_fn: Callable, model, reward_funcs, train_dataset, eval_dataset, processing_class,
          reward_processing_classes, peft_config, rollout_engine=None, tools=None, environment_factory=None,
          tool_parser=None) -> None:
    """Fill ``trainer`` (args, model, tokenizer, reward_funcs, loop, ref_model) for ``method_fn(args)``.

    Loads the model, tokenizer, reward functions and prompts (``online_config.prepare``, every
    check before a model loads) and hands them to :class:`OnlineRun` with the method's advantages
    and loss. ``rollout_engine``: a ``rlhfkit.rollout.vllm.VLLMRollout`` you built (rlhfkit
    extension); ``args.use_vllm`` starts one on the policy's folder instead. ``tools``,
    ``environment_factory`` (default: ``args.tools``, ``args.environment_factory``) and
    ``tool_parser`` make the rollouts multi-turn episodes (``rollout.agents``); an environment with
    a reward adds the reward function ``environment``.
    """
    trainer.args = args
    owner = type(args).__name__
    tools = resolve_tools(tools if tools is not None else args.tools, owner)
    environment_factory = resolve_environments(environment_factory if environment_factory is not None
                                                else args.environment_factory, owner)
    model, trainer.tokenizer, trainer.reward_funcs, train, evals = prepare(
        model, reward_funcs, args, train_dataset, eval_dataset, processing_class, peft_config,
        reward_processing_classes, rollout_engine, environment=environment_factory is not None)
    trainer.model = model
    agent = None
    if tools or environment_factory is not None or tool_parser is not None:
        agent = _agent(args, trainer.tokenizer, tools, environment_factory, tool_parser)
        if agent.rewarded:
            trainer.reward_funcs = [*trainer.reward_funcs, RewardFunc("environment", environment_reward,
                                                                      "environment_factory")]
        elif not trainer.reward_funcs:
            raise ConfigError(owner, "reward_funcs", "no reward function, and the environment has no get_reward() "
                                                     "or step(): pass reward_funcs=...")
    trainer.environment_factory, trainer.tools = environment_factory, tools
    trainer.loop = OnlineRun(args, model, trainer.tokenizer, method_fn(args), trainer.reward_funcs, score, *train,
                             *(evals or (None, None)), rollout_engine=rollout_engine, agent=agent)
    trainer.ref_model = trainer.loop.ref_model


def resolve_tools(tools, owner: str) -> list:
    """Tool functions: callables as they are, dotted paths imported (a bad one is a ConfigError on ``tools``)."""
    if tools is None:
        return []
    out = []
    for i, tool in enumerate(tools if isinstance(tools, (list, tuple)) else [tools]):
        if isinstance(tool, str):
            try:
                tool = load_function(tool, f"tools[{i}]", expected="a tool function")
            except ValueError as err:
                raise ConfigError(owner, "tools", str(err)) from None
        out.append(tool)
    return out


def resolve_environments(factory, owner: str):
    """An environment class / callable / dict of them; a dotted path is imported."""
    if isinstance(factory, str):
        try:
            return load_function(factory, "environment_factory", expected="an environment class or a dict of them",
                                 dict_ok=True)
        except ValueError as err:
            raise ConfigError(owner, "environment_factory", str(err)) from None
    return factory


def _agent(args, tokenizer, tools, environment_factory, tool_parser) -> Agent:
    """The multi-turn rollout settings; a tool without a schema or a broken factory is a ConfigError."""
    try:
        return Agent(tokenizer, tools=tools, environment_factory=environment_factory,
                     environment_column=args.environment_column,
                     max_tool_calling_iterations=args.max_tool_calling_iterations,
                     max_completion_length=args.max_completion_length, max_prompt_length=args.max_prompt_length,
                     tool_timeout=args.tool_timeout, tool_parser=tool_parser)
    except (TypeError, ValueError) as err:
        field = "tools" if str(err).startswith("tool") else "environment_factory"
        raise ConfigError(type(args).__name__, field, str(err)) from None
