"""``rlhfkit compare``: PPO and DPO from one config, on the same data and budget, and a report.

Both methods start from the same SFT policy and see ``budget`` training examples: PPO as
rollouts on the training prompts scored by the reward model, DPO as the preference pairs
the reward model was trained on. Checkpoints along the way give reward, hidden quality and
KL over training; the final policies (plus any ``extra_policies``) are evaluated on
held-out prompts against SFT. Output in ``output_dir``:

    ppo/  dpo/               models, metrics.jsonl
    results.json             every number below, and the samples
    report.md, report.html   table, plots (*.png), samples
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

from ..eval import evaluate_policies, metrics, summary_rows
from ..eval.evaluate import load_function, load_prompts, parse_named
from ..eval.report import Section, markdown_table, plot_bars, plot_curves, plot_distributions, write_report
from ..models import AutoModelForCausalLMWithValueHead
from ..trainers import DPOConfig, DPOTrainer, PPOConfig, PPOTrainer
from .config import CompareConfig, torch_threads

REWARD = "reward"  # the reward model's scorer name in results and tables


def _checkpoint_steps(total: int, points: int) -> list[int]:
    """Multiples of ``total // points`` below ``total``, then ``total``: where curve checkpoints are taken."""
    if points <= 0:
        return [total]
    every = max(1, total // points)
    return [every * k for k in range(1, points + 1) if every * k < total] + [total]


def run_ppo(cfg: CompareConfig, tokenizer, reward_fn, prompts: list[str], progress: bool) -> dict:
    out = Path(cfg.output_dir) / "ppo"
    if out.exists():
        shutil.rmtree(out)
    steps = _checkpoint_steps(cfg.ppo_steps, cfg.curve_points)
    policy = AutoModelForCausalLMWithValueHead.from_pretrained(cfg.policy, summary_dropout_prob=0.0)
    config = PPOConfig(batch_size=cfg.ppo_batch_size, mini_batch_size=cfg.ppo_mini_batch_size,
                       ppo_epochs=cfg.ppo_epochs, learning_rate=cfg.ppo_learning_rate,
                       init_kl_coef=cfg.ppo_init_kl_coef, adap_kl_ctrl=cfg.ppo_adap_kl_ctrl, target=cfg.ppo_target_kl,
                       kl_penalty=cfg.ppo_kl_penalty, max_grad_norm=1.0, seed=cfg.seed, output_dir=str(out),
                       log_with="jsonl", project_kwargs={"logging_dir": str(out)}, exp_name="compare-ppo")
    trainer = PPOTrainer(config, policy, None, tokenizer)
    start = time.time()
    history = _train_ppo_with_checkpoints(trainer, reward_fn, prompts, steps, out, cfg, progress)
    return {"path": out / "final", "seconds": time.time() - start, "history": history,
            "checkpoints": {s: out / f"checkpoint-{s}" for s in steps}, "steps": cfg.ppo_steps}


def _train_ppo_with_checkpoints(trainer, reward_fn, prompts, steps, out, cfg, progress):
    # train() runs until trainer.current_step reaches `steps` and then writes checkpoint-<step>
    # and final/; running it once per curve point leaves a checkpoint at each of them.
    history = []
    for target in steps:
        history += trainer.train(reward_fn, prompts, steps=target, progress=progress, save_steps=0,
                                 output_dir=str(out), generation_kwargs=dict(max_new_tokens=cfg.max_new_tokens))
    return history


def run_dpo(cfg: CompareConfig, progress: bool) -> dict:
    out = Path(cfg.output_dir) / "dpo"
    if out.exists():
        shutil.rmtree(out)
    steps = _checkpoint_steps(cfg.dpo_steps, cfg.curve_points)
    every = steps[0] if len(steps) > 1 else 0
    args = DPOConfig(output_dir=str(out), model_name_or_path=cfg.policy, dataset_name=cfg.pairs,
                     max_steps=cfg.dpo_steps, per_device_train_batch_size=cfg.dpo_batch_size,
                     learning_rate=cfg.dpo_learning_rate, beta=cfg.dpo_beta, loss_type=cfg.dpo_loss_type,
                     max_length=128, warmup_ratio=0.1, logging_steps=max(1, cfg.dpo_steps // 20),
                     save_steps=every, report_to="jsonl", disable_tqdm=not progress, seed=cfg.seed)
    start = time.time()
    trainer = DPOTrainer(args=args)
    history = trainer.train()
    seconds = time.time() - start
    found = {int(p.name.split("-")[1]): p for p in out.glob("checkpoint-*")}
    found[cfg.dpo_steps] = out  # the final model
    return {"path": out, "seconds": seconds, "history": history, "steps": cfg.dpo_steps,
            "checkpoints": {s: found[s] for s in steps if s in found}}


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"\n==> {text}", flush=True)


def _load_policy(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _curve(cfg: CompareConfig, run: dict, batch_size: int, tokenizer, prompts, scorers, sft, start_row) -> list[dict]:
    """Reward, scorer means and KL at each checkpoint, against training examples seen."""
    rows = [start_row]
    for step, path in sorted(run["checkpoints"].items()):
        model = _load_policy(path)
        res = evaluate_policies({"x": model}, tokenizer, prompts, scorers=scorers, reference=sft,
                                samples_per_prompt=cfg.curve_samples_per_prompt, max_new_tokens=cfg.max_new_tokens,
                                kl_estimator=cfg.kl_estimator, seed=cfg.seed + 1)["policies"]["x"]
        rows.append({"step": step, "examples": step * batch_size, "KL": res["kl"]["mean"],
                     **{name: d["mean"] for name, d in res["scores"].items()}})
    return rows


def run_compare(cfg: CompareConfig, *, progress: bool = True, train_seconds: dict | None = None,
                extra_sections: list[Section] | None = None, title: str = "PPO versus DPO",
                set_threads: bool = True) -> dict:
    """Train PPO and DPO from ``cfg.policy``, evaluate everything, write the report (see the module docstring).

    ``set_threads``: apply ``cfg.num_threads`` for the duration (the demo has already done it).
    """
    with torch_threads(cfg.num_threads) if set_threads else contextlib.nullcontext():
        return _compare(cfg, progress, train_seconds, extra_sections, title)


def _compare(cfg: CompareConfig, progress: bool, train_seconds: dict | None, extra_sections: list[Section] | None,
             title: str) -> dict:
    from transformers import AutoTokenizer

    for name in ("policy", "reward_model", "pairs"):
        if not getattr(cfg, name):
            raise ValueError(f"compare needs {name} (a path); see `rlhfkit compare --help`")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(cfg.policy)
    # default: the prompt of each pair, once, in any format the data layer reads pairs in
    prompts = load_prompts(cfg.prompts) if cfg.prompts else list(dict.fromkeys(load_prompts(cfg.pairs)))
    eval_prompts = load_prompts(cfg.eval_prompts) if cfg.eval_prompts else prompts
    rm = metrics.reward_model_scorer(cfg.reward_model)
    scorers = {REWARD: rm}
    if cfg.reward_fn:
        scorers[cfg.reward_fn_name] = load_function(cfg.reward_fn)

    _say(progress, f"PPO: {cfg.ppo_steps} steps x {cfg.ppo_batch_size} rollouts, reward model {cfg.reward_model}")
    ppo = run_ppo(cfg, tokenizer, rm, prompts, progress)
    _say(progress, f"DPO: {cfg.dpo_steps} steps x {cfg.dpo_batch_size} pairs from {cfg.pairs}")
    dpo = run_dpo(cfg, progress)

    _say(progress, f"Evaluating on {len(eval_prompts)} held-out prompts")
    sft = _load_policy(cfg.policy)
    policies = {name: _load_policy(path) for name, path in parse_named(cfg.extra_policies).items()}
    policies.update({"SFT": sft, "PPO": _load_policy(ppo["path"]), "DPO": _load_policy(dpo["path"])})
    results = evaluate_policies(policies, tokenizer, eval_prompts, scorers=scorers, reference=sft, baseline="SFT",
                                samples_per_prompt=cfg.eval_samples_per_prompt, max_new_tokens=cfg.max_new_tokens,
                                kl_estimator=cfg.kl_estimator, seed=cfg.seed)
    curves = {}
    if cfg.curve_points > 0:
        start = evaluate_policies({"x": sft}, tokenizer, eval_prompts, scorers=scorers, reference=sft,
                                  samples_per_prompt=cfg.curve_samples_per_prompt, max_new_tokens=cfg.max_new_tokens,
                                  kl_estimator=cfg.kl_estimator, seed=cfg.seed + 1)["policies"]["x"]
        start_row = {"step": 0, "examples": 0, "KL": start["kl"]["mean"],
                     **{n: d["mean"] for n, d in start["scores"].items()}}
        curves = {"PPO": _curve(cfg, ppo, cfg.ppo_batch_size, tokenizer, eval_prompts, scorers, sft, start_row),
                  "DPO": _curve(cfg, dpo, cfg.dpo_batch_size, tokenizer, eval_prompts, scorers, sft, start_row)}
    times = {**(train_seconds or {}), "PPO": ppo["seconds"], "DPO": dpo["seconds"]}
    table = summary_rows(results, times)
    summary = {"table": table, "results": results, "curves": curves, "ppo_history": ppo["history"],
               "dpo_history": dpo["history"], "seconds": times, "ppo_steps": ppo["steps"], "dpo_steps": dpo["steps"],
               "budget": cfg.budget, "eval_prompts": eval_prompts}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    sections = _sections(cfg, summary, scorers, out, extra_sections or [])
    md, html = write_report(sections, out, title)
    if not cfg.keep_checkpoints:
        for folder in (out / "ppo", out / "dpo"):
            for path in folder.glob("checkpoint-*"):
                shutil.rmtree(path, ignore_errors=True)
    summary.update(report=str(md), report_html=str(html))
    return summary


def headline(table: list[dict], key: str) -> str:
    rows = {r["policy"]: r for r in table}
    if "SFT" not in rows or key not in rows["SFT"]:
        return ""
    base = rows["SFT"][key]
    parts = [f"{name} {rows[name][key]:.3f} ({rows[name][key] - base:+.3f})" for name in ("PPO", "DPO") if name in rows]
    return f"Mean {key} on held-out prompts: SFT {base:.3f}; " + ", ".join(parts) + "."


def _sections(cfg: CompareConfig, summary: dict, scorers: dict, out: Path, extra: list[Section]) -> list[Section]:
    table, results = summary["table"], summary["results"]
    key = cfg.reward_fn_name if cfg.reward_fn else REWARD
    text = (f"{headline(table, key)}\n\n"
            f"Each policy answered {len(summary['eval_prompts'])} held-out prompts x {cfg.eval_samples_per_prompt} "
            f"samples. `{REWARD}`: the learned reward model's score"
            + (f"; `{cfg.reward_fn_name}`: `{cfg.reward_fn}`" if cfg.reward_fn else "")
            + f". KL: KL(policy || SFT) in nats per response ({cfg.kl_estimator} estimator on the policy's own "
            "samples). Win rates against SFT pair the i-th samples of both policies; ties count half. Length in "
            "tokens. Train time: wall seconds of the method's training (PPO's includes sampling and reward-model "
            "scoring, not training the reward model).")
    sections = [Section("Result", text, table=table)]
    sections += extra
    images = []
    if summary["curves"]:
        keys = [REWARD] + ([cfg.reward_fn_name] if cfg.reward_fn else []) + ["KL"]
        images.append(plot_curves(summary["curves"], keys, out / "curves.png", x="examples"))
    hist = summary["ppo_history"]
    if hist:
        images.append(plot_curves({"PPO (training batches)": hist}, ["reward", "kl"], out / "ppo_training.png",
                                  x="step", titles={"reward": "reward-model score", "kl": "KL to SFT (k1, nats)"}))
    sections.append(Section("Over training", f"Both methods evaluated at checkpoints on the held-out prompts "
                            f"({cfg.curve_samples_per_prompt} samples per prompt), against training examples seen "
                            f"(PPO: rollouts, DPO: pairs; budget {cfg.budget} each), then PPO's own log per step.",
                            images=images))
    dists = [plot_distributions({n: [s[name] for s in r["samples"]] for n, r in results["policies"].items()},
                                out / f"distribution_{i}.png", xlabel=name) for i, name in enumerate(scorers)]
    dist_rows = [{"policy": n, "scorer": name, **r["scores"][name]} for name in scorers
                 for n, r in results["policies"].items()]
    sections.append(Section("Score distributions", table=dist_rows, images=dists))
    times = {k: v for k, v in summary["seconds"].items() if v is not None}
    sections.append(Section("Time per method", "Wall-clock seconds of each training stage on this machine.",
                            images=[plot_bars(times, out / "time.png", title="training time")]))
    sections.append(Section("Samples", pre=_samples_text(results, per_policy=3)))
    sections.append(Section("Setup", f"- PPO: {summary['ppo_steps']} steps x {cfg.ppo_batch_size} rollouts, "
                            f"{cfg.ppo_epochs} epochs, lr {cfg.ppo_learning_rate}, KL coef {cfg.ppo_init_kl_coef} "
                            f"({'adaptive' if cfg.ppo_adap_kl_ctrl else 'fixed'}, {cfg.ppo_kl_penalty})\n"
                            f"- DPO: {summary['dpo_steps']} steps x {cfg.dpo_batch_size} pairs, "
                            f"{cfg.dpo_loss_type}, beta {cfg.dpo_beta}, lr {cfg.dpo_learning_rate}\n"
                            f"- the resolved config is `{Path(cfg.output_dir) / 'config.yaml'}`; every number is "
                            "in `results.json`"))
    return sections


def _samples_text(results: dict, per_policy: int = 3) -> str:
    lines = []
    for name, r in results["policies"].items():
        lines.append(f"[{name}]")
        seen = set()
        for s in r["samples"]:
            if s["prompt"] in seen:
                continue
            seen.add(s["prompt"])
            scores = ", ".join(f"{k} {v:.2f}" for k, v in s.items() if k not in ("prompt", "response"))
            lines.append(f"  {s['prompt']!r} -> {s['response']!r}  ({scores})")
            if len(seen) >= per_policy:
                break
    return "\n".join(lines)


def print_table(table: list[dict]) -> None:
    print(markdown_table(table), flush=True)
