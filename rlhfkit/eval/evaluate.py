"""Score policies on a prompt set, and a reward model on labelled pairs.

    results = evaluate_policies({"sft": sft, "ppo": ppo}, tokenizer, prompts,
                                scorers={"reward": reward_model_scorer("runs/rm")},
                                reference=sft, baseline="sft")
    results["ppo"]["reward"]["mean"], results["ppo"]["kl"]["mean"], results["ppo"]["win_rate"]["reward"]

``run_eval(EvalConfig(...))`` is the ``rlhfkit eval`` command: it loads everything from
paths, writes ``eval.json``, ``eval.md`` / ``eval.html`` and a reward-distribution plot,
and returns the results.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..trainers.config import Checks, check_field_types, f
from . import metrics

_SPEC = re.compile(r"([A-Za-z_][\w.]*|.+\.py):[A-Za-z_]\w*")  # package.module:function or path/to/file.py:function


@dataclass
class EvalConfig:
    policies: str | None = f(None, "Policies to score: comma-separated name=path (or just path) of causal LM folders.")
    prompts: str | None = f(None, "Prompt set: a .jsonl/.json/.csv file with a 'prompt' column, or a .txt file with "
                                  "one prompt per line.")
    reward_model: str | None = f(None, "Reward-model folder (num_labels=1) to score responses with.")
    reward_fn: str | None = f(None, "A Python reward function 'module:function' taking (prompts, responses) and "
                                    "returning one score per response, e.g. rlhfkit.pipeline.corpus:true_quality.")
    reference: str | None = f(None, "Reference policy folder for KL(policy || reference); default: the baseline.")
    baseline: str | None = f(None, "Name of the policy the others' win rates are measured against (default: the "
                                   "first).")
    samples_per_prompt: int = f(8, "Responses sampled per prompt and policy.")
    max_new_tokens: int = f(32, "Longest sampled response, in tokens.")
    batch_size: int = f(64, "Sequences per generation / scoring batch.")
    kl_estimator: str = f("k3", "Per-token KL estimator summed over each response: k1 (kl), k2 (mse), k3, abs.")
    pairs: str | None = f(None, "Labelled preference pairs (prompt, chosen, rejected) to measure the reward model on.")
    pair_threshold: float = f(0.0, "A pair is predicted 'first is better' when r(first) - r(second) > this.")
    seed: int = f(0, "Seed of the sampling (the same for every policy, so their samples pair up).")
    output_dir: str = f("runs/eval", "Where eval.json, eval.md, eval.html and the plots go.")

    def __post_init__(self):
        check_field_types(self)
        c = Checks(self)
        c.at_least(1, "samples_per_prompt", "max_new_tokens", "batch_size")
        c.choice("kl_estimator", ("kl", "k1", "abs", "mse", "k2", "k3"))
        c.non_empty("policies", "prompts", "reward_model", "reward_fn", "reference", "baseline", "pairs",
                    "output_dir")
        if self.reward_fn is not None and not _SPEC.fullmatch(self.reward_fn):
            c.fail("reward_fn", f"must look like 'package.module:function' or 'path/to/file.py:function', got "
                                f"{self.reward_fn!r}")

    @classmethod
    def field_help(cls) -> dict[str, str]:
        from dataclasses import fields

        return {x.name: x.metadata.get("help", "") for x in fields(cls)}


def parse_named(value) -> dict[str, str]:
    """'a=path1,path2' or a list or a mapping -> {name: path}; a bare path is named by its folder."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    items = value if isinstance(value, (list, tuple)) else [x for x in str(value).split(",") if x.strip()]
    out = {}
    for item in items:
        name, _, path = str(item).strip().rpartition("=")
        path = path.strip()
        name = name.strip() or Path(path).name or path
        if name in out:
            raise ValueError(f"policy name {name!r} given twice; name them as name=path")
        out[name] = path
    return out


def load_prompts(source) -> list[str]:
    """Prompts from a list, a .txt file (one per line) or records in any format the data layer reads
    (``rlhfkit.rollout.prompts.load_prompts``, the reader every command shares; rows with a 'prompt'
    column are read for it alone); they must be texts."""
    if isinstance(source, (list, tuple)):
        return [str(p) for p in source]
    from ..data import DataError
    from ..rollout.prompts import load_prompts as read_prompts

    prompts, _ = read_prompts(source, columns=False)
    if not all(isinstance(p, str) for p in prompts):
        raise DataError(f"{source}: holds conversations (lists of messages); rlhfkit eval scores text prompts, "
                        "give a .txt file or records with a text 'prompt' column")
    return prompts


def check_scorer_spec(spec: str, where: str = "reward_fn") -> None:
    """``module:function`` (or ``file.py:function``) must import and name a callable (checked before any
    model loads; the trainers' reward-function loader, so its errors name file and line)."""
    from ..rollout.rewards import load_function as load_reward_function

    load_reward_function(spec, where)


def check_inputs(config: EvalConfig, where=lambda name: name) -> None:
    """What ``run_eval`` needs, checked before anything loads: which inputs go together, model folders,
    data files (every row of the pairs) and the reward function. ``where(field)`` names a field in messages."""
    from ..data import detect_format, load_records, validate
    from ..models.loading import check_policy_source, check_reward_model_source

    policies = parse_named(config.policies)
    if not policies and not config.pairs:
        raise ValueError("nothing to evaluate: give policies (with prompts) and/or pairs (with a reward model)")
    if config.pairs and not config.reward_model:
        raise ValueError(f"{where('pairs')}: pairs need a reward_model to evaluate")
    if policies and not (config.reward_model or config.reward_fn):
        raise ValueError(f"{where('policies')}: policies need a reward_model and/or a reward_fn to score them with")
    if policies and not config.prompts:
        raise ValueError(f"{where('policies')}: policies need prompts")
    if config.baseline is not None and policies and config.baseline not in policies:
        raise ValueError(f"{where('baseline')}: {config.baseline!r} is not one of the policies {list(policies)}")
    for name, path in policies.items():
        check_policy_source(path, f"{where('policies')} ({name})")
    if config.reference:
        check_policy_source(config.reference, where("reference"))
    if config.reward_model:
        check_reward_model_source(config.reward_model, where("reward_model"))
    if config.reward_fn:
        check_scorer_spec(config.reward_fn, where("reward_fn"))
    if config.prompts:
        load_prompts(config.prompts)
    if config.pairs:
        records = load_records(config.pairs)
        validate(records, detect_format(records))


def load_function(spec: str, where: str = "reward_fn"):
    """'package.module:function' (or 'file.py:function') -> the function."""
    from ..rollout.rewards import load_function as load_reward_function

    if ":" not in spec:
        raise ValueError(f"{where} must look like 'module:function', got {spec!r}")
    return load_reward_function(spec, where)


def evaluate_policies(policies: dict, tokenizer, prompts: list[str], *, scorers: dict[str, metrics.Scorer],
                      reference=None, baseline: str | None = None, samples_per_prompt: int = 8,
                      max_new_tokens: int = 32, batch_size: int = 64, kl_estimator: str = "k3",
                      seed: int = 0) -> dict:
    """Per policy: reward distribution per scorer, KL to ``reference``, win rate against ``baseline``
    per scorer, response length, sampling time, and the samples themselves (under ``"samples"``)."""
    if not policies:
        raise ValueError("no policies to evaluate")
    baseline = baseline if baseline is not None else next(iter(policies))
    if baseline not in policies:
        raise ValueError(f"baseline {baseline!r} is not one of the policies {list(policies)}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    samples = {}
    for name, model in policies.items():
        s = metrics.sample(model, tokenizer, prompts, n_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, seed=seed)
        for scorer_name, scorer in scorers.items():
            s.scores[scorer_name] = [float(x) for x in scorer(s.prompts, s.texts)]
        samples[name] = s
    results = {}
    for name, s in samples.items():
        row = {scorer: metrics.distribution(values) for scorer, values in s.scores.items()}
        row = {"scores": row, "length": metrics.length_stats(s.lengths), "sample_seconds": s.seconds,
               "win_rate": {scorer: metrics.win_rate(values, samples[baseline].scores[scorer])
                            for scorer, values in s.scores.items()}}
        if reference is not None:
            kl = metrics.kl_to_reference(policies[name], reference, s, pad, kl_estimator, batch_size)
            row["kl"] = metrics.distribution(kl)
        row["samples"] = [{"prompt": p, "response": t, **{k: v[i] for k, v in s.scores.items()}}
                          for i, (p, t) in enumerate(zip(s.prompts, s.texts))]
        results[name] = row
    return {"policies": results, "baseline": baseline, "prompts": len(prompts),
            "samples_per_prompt": samples_per_prompt}


def evaluate_reward_model(scorer: metrics.Scorer, pairs: list[dict], threshold: float = 0.0, seed: int = 0) -> dict:
    """Accuracy, precision, recall and F1 of ``scorer`` on pairs ``{prompt, chosen, rejected}``."""
    prompts = [p.get("prompt") or "" for p in pairs]
    chosen = scorer(prompts, [p["chosen"] for p in pairs])
    rejected = scorer(prompts, [p["rejected"] for p in pairs])
    return metrics.pair_classification(chosen, rejected, threshold=threshold, seed=seed)


def summary_rows(results: dict, train_seconds: dict | None = None) -> list[dict]:
    """One flat row per policy for tables: mean score per scorer, KL, win rates, length, time."""
    rows = []
    for name, r in results["policies"].items():
        row = {"policy": name}
        for scorer, dist in r["scores"].items():
            row[scorer] = dist["mean"]
        if "kl" in r:
            row["KL"] = r["kl"]["mean"]
        for scorer, value in r["win_rate"].items():
            row[f"win vs {results['baseline']} ({scorer})"] = value
        row["length"] = r["length"]["mean"]
        if train_seconds is not None:
            row["train time (s)"] = train_seconds.get(name)
        rows.append(row)
    return rows


def run_eval(config: EvalConfig, checked: bool = False) -> dict:
    """The ``rlhfkit eval`` command: check (unless ``checked``: :func:`check_inputs` ran already), load,
    evaluate, write eval.json / eval.md / eval.html / plots."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import report

    if not checked:
        check_inputs(config)
    policies = parse_named(config.policies)
    scorers: dict[str, metrics.Scorer] = {}
    if config.reward_model:
        scorers["reward"] = metrics.reward_model_scorer(config.reward_model)
    if config.reward_fn:
        scorers[config.reward_fn.rpartition(":")[2]] = load_function(config.reward_fn)
    out = {"config": asdict(config)}
    if policies:
        prompts = load_prompts(config.prompts)
        tokenizer = AutoTokenizer.from_pretrained(next(iter(policies.values())))
        models = {name: AutoModelForCausalLM.from_pretrained(path).eval() for name, path in policies.items()}
        baseline = config.baseline or next(iter(models))
        if config.reference:
            reference = AutoModelForCausalLM.from_pretrained(config.reference).eval()
        else:
            reference = models.get(baseline)
        out.update(evaluate_policies(models, tokenizer, prompts, scorers=scorers, reference=reference,
                                     baseline=baseline, samples_per_prompt=config.samples_per_prompt,
                                     max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                                     kl_estimator=config.kl_estimator, seed=config.seed))
    if config.pairs:
        pairs = [dict(r) for r in _load_pairs(config.pairs)]
        out["reward_model"] = evaluate_reward_model(scorers["reward"], pairs, config.pair_threshold, config.seed)
    report.write_eval_report(out, config.output_dir)
    return out


def _load_pairs(path: str) -> list[dict]:
    from ..data import load_records, to_preference_pairs

    return list(to_preference_pairs(load_records(path)))
