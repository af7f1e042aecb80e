"""Held-out evaluation of a policy on prompts, and the sample-and-score step it shares with training.

    completions = Completions(tokenizer, generation_kwargs)        # rollout.sampling: generate or an engine
    sample = functools.partial(sample_and_score, model, tokenizer, completions, reward_funcs, max_prompt_length=128)
    row = evaluate_policy(sample, reward_funcs, prompts, columns, num_generations=4, batch_size=16)
    row["eval/reward"], row["eval/reward_std"], row["eval/completions/mean_length"], ...

``sample_and_score`` draws G completions for each prompt through ``sampling.Completions`` (the one
dispatcher between Hugging Face ``generate`` and a rollout engine) and scores them with
``rewards.score``; the online trainers' rollouts (``trainers.online.OnlineRun``) and
``evaluate_policy`` both use it, so an evaluation samples exactly as training does.
``evaluate_policy`` is the one held-out evaluation: the online trainers log its default row,
``rlhfkit ppo`` (``pipeline.ppo_run``) adds the KL to its reference through ``per_sample`` and
logs its own names through ``summary``. It draws from the global RNG; wrap it
(``trainers.checkpoint.rng_preserved``) where training must not see it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from .prompts import render_prompts
from .rewards import score
from .sampling import Completions


class Sampled(NamedTuple):
    queries: list[torch.Tensor]        # N prompt token tensors (each prompt G times)
    responses: list[torch.Tensor]      # N completions, at least one token each
    rewards: torch.Tensor              # (N,) weighted sum of the reward functions
    per_func: torch.Tensor             # (N, functions)
    engine_logprobs: list[torch.Tensor] | None  # N rows from a rollout engine, or None
    prompts: list                      # N prompts as the reward functions saw them
    completions: list                  # N completions as the reward functions saw them


def reward_name(func, index: int) -> str:
    """A reward function's name in the logs: its ``name``, ``__name__``, else ``func<index>``."""
    name = getattr(func, "name", None) or getattr(func, "__name__", None)
    return str(name) if name and name != "<lambda>" else f"func{index}"


def encode_prompts(tokenizer, prompts: list, max_prompt_length: int | None, device=None,
                   add_special_tokens: bool = False) -> list[torch.Tensor]:
    """Rendered prompts as token tensors, truncated from the left to ``max_prompt_length`` (as TRL).

    ``add_special_tokens``: the tokenizer's own (a BOS, say) around each text; off as in TRL's
    GRPO, where a chat template writes them itself. ``rlhfkit ppo`` turns it on for text prompts,
    as its training tokenises them."""
    texts = render_prompts(tokenizer, prompts)
    ids = tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    keep = max_prompt_length
    return [torch.tensor(x[-keep:] if keep else x, dtype=torch.long, device=device) for x in ids]


def completion_values(tokenizer, prompts: list, responses: list[torch.Tensor]) -> list:
    """Responses as the reward functions see them: texts, or one assistant message each for message prompts."""
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    conversational = bool(prompts) and isinstance(prompts[0], list)
    return [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts


@torch.no_grad()
def sample_and_score(policy, tokenizer, completions: Completions, reward_funcs: list, prompts: list, columns: dict,
                     num_generations: int, *, reward_weights: list[float] | None = None,
                     max_prompt_length: int | None = None, device=None, step: int = 0,
                     score_fn: Callable = score, add_special_tokens: bool = False) -> Sampled:
    """``num_generations`` completions per prompt, generated and scored; rows ``[k*G, (k+1)*G)`` are prompt k's.

    ``step``: the optimiser step the policy's weights belong to (a rollout engine is synced once
    per step). An empty completion becomes one EOS token (its engine log-prob: NaN, unknown).
    The reward functions get the dataset's ``columns`` (each prompt's values repeated G times) and
    ``completion_ids``, as TRL passes them. Rewards come back float32 on ``device``.
    ``add_special_tokens``: see ``encode_prompts``.
    """
    G = num_generations
    queries = [q for q in encode_prompts(tokenizer, prompts, max_prompt_length, device, add_special_tokens)
               for _ in range(G)]
    completions.sync(policy, step)  # an engine samples from the weights being trained
    responses, engine_lps = completions.sample(policy, queries)
    eos = tokenizer.eos_token_id
    if engine_lps is not None:  # an empty response becomes one EOS below; its engine log-prob is unknown
        engine_lps = [lp if len(lp) else lp.new_full((1,), float("nan")) for lp in engine_lps]
    responses = [r if len(r) else r.new_full((1,), eos) for r in responses]
    repeated = [p for p in prompts for _ in range(G)]
    values = completion_values(tokenizer, repeated, responses)
    cols = {k: [v for v in vals for _ in range(G)] for k, vals in columns.items()}
    cols["completion_ids"] = [r.tolist() for r in responses]  # as TRL passes them (token-level rules)
    rewards, per_func = score_fn(reward_funcs, reward_weights, repeated, values, cols)
    rewards = (rewards if device is None else rewards.to(device)).float()  # (N,)
    return Sampled(queries, responses, rewards, per_func, engine_lps, repeated, values)


class Evaluation(NamedTuple):
    """Every completion of one ``evaluate_policy`` call; rows ``[k*G, (k+1)*G)`` are prompt k's."""

    rewards: torch.Tensor              # (P * G,) weighted rewards, on the CPU
    per_func: torch.Tensor             # (P * G, functions), on the CPU
    responses: list[torch.Tensor]      # P * G completions (token ids, at least one each)
    prompts: list                      # P * G prompts as the reward functions saw them
    completions: list                  # P * G completions as the reward functions saw them
    extra: dict[str, torch.Tensor]     # name -> (P * G,) values from ``per_sample``, on the CPU
    num_generations: int               # G


def online_metrics(evaluation: Evaluation, reward_funcs: list) -> dict:
    """The online trainers' ``eval/*`` row of ``evaluate_policy`` (see there); a ``per_sample`` value
    ``name`` is reported as its nanmean, ``eval/<name>``."""
    rewards, per, G = evaluation.rewards, evaluation.per_func, evaluation.num_generations
    lengths = [len(x) for x in evaluation.responses]
    groups = rewards.view(-1, G)  # (P, G)
    row = {"eval/reward": rewards.mean().item(), "eval/reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
           "eval/frac_reward_zero_std": groups.std(-1).lt(1e-8).float().mean().item(),
           "eval/completions/mean_length": sum(lengths) / len(lengths)}
    for j, func in enumerate(reward_funcs):
        row[f"eval/rewards/{reward_name(func, j)}/mean"] = torch.nanmean(per[:, j]).item()
    for name, values in evaluation.extra.items():
        row[f"eval/{name}"] = torch.nanmean(values.float()).item()
    return row


@torch.no_grad()
def evaluate_policy(sample: Callable[[list, dict, int], Sampled], reward_funcs: list, prompts: list,
                    columns: dict | None = None, *, num_generations: int, batch_size: int,
                    per_sample: Callable[[Sampled], dict] | None = None,
                    summary: Callable[[Evaluation], dict] | None = None) -> dict:
    """Sample ``num_generations`` completions for every prompt and summarise their rewards.

        eval/reward                     mean reward of all completions
        eval/reward_std                 their unbiased std (0 for a single completion)
        eval/frac_reward_zero_std       share of prompts whose G rewards have std < 1e-8
        eval/completions/mean_length    mean completion length in tokens
        eval/rewards/<name>/mean        nanmean of each reward function's scores
        eval/<name>                     nanmean of each ``per_sample`` value

    ``sample(prompts, columns, G) -> Sampled``: ``sample_and_score`` with the policy, tokenizer,
    ``Completions`` and ``reward_funcs`` bound (``functools.partial``, or the trainer's own
    rollout sampler); ``reward_funcs`` name the per-function rows. Prompts go
    ``max(1, batch_size // num_generations)`` at a time, i.e. about ``batch_size`` completions
    per sampling call. ``columns``: one value per prompt for each dataset column.
    ``per_sample(sampled) -> {name: (n,) tensor}``: more per-completion values, computed on each
    sampling call's completions while their tokens are at hand (``rlhfkit ppo``: the KL to the
    reference). ``summary(evaluation) -> row``: another row from the same ``Evaluation`` (default:
    the table above, ``online_metrics``).
    Shapes: P prompts -> a dict of Python floats over P * G completions.
    """
    G = num_generations
    columns = columns or {}
    per_call = max(1, batch_size // G)
    parts: list[Sampled] = []
    extras: list[dict] = []
    for start in range(0, len(prompts), per_call):
        cols = {k: v[start:start + per_call] for k, v in columns.items()}
        sampled = sample(prompts[start:start + per_call], cols, G)
        parts.append(sampled)
        extras.append({k: v.detach().cpu() for k, v in (per_sample(sampled) if per_sample else {}).items()})
    evaluation = Evaluation(
        rewards=torch.cat([p.rewards.cpu() for p in parts]),
        per_func=torch.cat([p.per_func.float().cpu() for p in parts]),
        responses=[r for p in parts for r in p.responses], prompts=[x for p in parts for x in p.prompts],
        completions=[c for p in parts for c in p.completions],
        extra={k: torch.cat([e[k] for e in extras]) for k in (extras[0] if extras else {})}, num_generations=G)
    return summary(evaluation) if summary is not None else online_metrics(evaluation, reward_funcs)
