"""The demo's stages before the PPO-versus-DPO comparison, one function each.

Every stage writes into ``<output_dir>/<stage>/`` through the public trainers and returns
what the next stage needs (paths, metrics, seconds), so the demo doubles as the
integration test of the whole library.

    data/      generated corpus, training and held-out prompts
    base/      tokenizer + GPT-2-shaped model pre-trained from scratch   (SFTTrainer, all tokens)
    sft/       the base model fine-tuned on demonstrations               (SFTTrainer, completions)
    feedback/  SFT samples, simulated 1-3 ratings, calibration, preference pairs
    reward/    reward model trained on the calibrated pairs              (RewardTrainer)
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import time
from pathlib import Path

from .. import testing
from ..eval import metrics
from ..feedback import calibrated_pairs
from ..trainers import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer
from . import corpus
from .annotators import make_annotators, simulate_ratings
from .config import PipelineConfig


def fresh_dir(root, name: str) -> Path:
    """``root/name``, emptied: a stage never mixes its outputs with an earlier run's."""
    path = Path(root) / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _loop_args(cfg: PipelineConfig, progress: bool, **kw) -> dict:
    return dict(per_device_train_batch_size=cfg.train_batch_size, per_device_eval_batch_size=64, max_length=64,
                report_to="jsonl", logging_steps=10, disable_tqdm=not progress, seed=cfg.seed, warmup_ratio=0.05, **kw)


def make_corpus(cfg: PipelineConfig) -> dict:
    """Write the pre-training texts, SFT demonstrations and prompt lists to ``data/``."""
    out = fresh_dir(cfg.output_dir, "data")
    prompts = corpus.TRAIN_PROMPTS + corpus.EVAL_PROMPTS  # openings are language, not labels
    texts = corpus.pretrain_texts(cfg.pretrain_texts, cfg.pretrain_rock_share, prompts, seed=cfg.seed)
    demos = corpus.sft_rows(cfg.sft_examples, cfg.sft_rock_share, prompts, seed=cfg.seed + 1)
    paths = {"pretrain": write_jsonl(out / "pretrain.jsonl", ({"text": t} for t in texts)),
             "sft": write_jsonl(out / "sft.jsonl", demos),
             "prompts": out / "prompts_train.txt", "eval_prompts": out / "prompts_eval.txt"}
    paths["prompts"].write_text("\n".join(corpus.TRAIN_PROMPTS) + "\n")
    paths["eval_prompts"].write_text("\n".join(corpus.EVAL_PROMPTS) + "\n")
    return {"paths": paths, "texts": texts, "demos": demos}


def pretrain(cfg: PipelineConfig, data: dict, progress: bool = True) -> dict:
    """Train a tokenizer and a randomly initialised GPT-2-shaped model on the 'web text': the base policy."""
    start = time.time()
    out = fresh_dir(cfg.output_dir, "base")
    tokenizer = testing.tiny_tokenizer(cfg.vocab_size, data["texts"] + [d["prompt"] + d["completion"]
                                                                       for d in data["demos"]])
    model = testing.tiny_causal_lm("gpt2", tokenizer, seed=cfg.seed, hidden_size=cfg.hidden_size,
                                   num_layers=cfg.num_layers, num_heads=cfg.num_heads, max_positions=128)
    args = SFTConfig(output_dir=str(out), max_steps=cfg.pretrain_steps, learning_rate=cfg.pretrain_learning_rate,
                     lr_scheduler_type="cosine", completion_only_loss=False, **_loop_args(cfg, progress))
    trainer = SFTTrainer(model=model, args=args, train_dataset=str(data["paths"]["pretrain"]),
                         processing_class=tokenizer)
    history = trainer.train()
    return {"path": out, "seconds": time.time() - start, "loss": _last(history, "train/loss"),
            "parameters": sum(p.numel() for p in model.parameters())}


def supervised_finetune(cfg: PipelineConfig, data: dict, base: Path, progress: bool = True) -> dict:
    """Fine-tune the base model on the demonstrations (loss on completions only)."""
    start = time.time()
    out = fresh_dir(cfg.output_dir, "sft")
    args = SFTConfig(output_dir=str(out), model_name_or_path=str(base), dataset_name=str(data["paths"]["sft"]),
                     max_steps=cfg.sft_steps, learning_rate=cfg.sft_learning_rate, **_loop_args(cfg, progress))
    history = SFTTrainer(args=args).train()
    return {"path": out, "seconds": time.time() - start, "loss": _last(history, "train/loss")}


def collect_feedback(cfg: PipelineConfig, sft_path: Path) -> dict:
    """Sample SFT responses, have simulated annotators rate them, calibrate, and make pairs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.time()
    out = fresh_dir(cfg.output_dir, "feedback")
    tokenizer = AutoTokenizer.from_pretrained(sft_path)
    model = AutoModelForCausalLM.from_pretrained(sft_path).eval()
    drawn = metrics.sample(model, tokenizer, corpus.TRAIN_PROMPTS, n_per_prompt=cfg.responses_per_prompt,
                           max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    responses = {}
    for prompt, text in zip(drawn.prompts, drawn.texts):
        if text.strip():  # the same text twice is one item with more ratings
            responses[(prompt, text)] = corpus.rock_quality(text)
    items = [{"prompt": p, "response": r, "quality": q} for (p, r), q in responses.items()]
    annotators = make_annotators(cfg.annotators, cfg.annotator_offset_std, cfg.annotator_noise_std, seed=cfg.seed)
    ratings = simulate_ratings(items, annotators, cfg.ratings_per_response, seed=cfg.seed)
    pairs, cal = calibrated_pairs(ratings, shrinkage=cfg.calibration_shrinkage, min_gap=cfg.min_gap,
                                  max_pairs_per_prompt=cfg.max_pairs_per_prompt, seed=cfg.seed)
    heldout = set(random.Random(cfg.seed).sample(corpus.TRAIN_PROMPTS, cfg.heldout_prompts))
    train_pairs = [p for p in pairs if p["prompt"] not in heldout]
    eval_pairs = [p for p in pairs if p["prompt"] in heldout]
    if not train_pairs or not eval_pairs:
        raise RuntimeError(f"too few preference pairs ({len(train_pairs)} train, {len(eval_pairs)} held out): "
                           "raise responses_per_prompt or lower min_gap")

    # Bias estimates against the simulation's truth. The model fixes mean offset 0, so the truth is centred too.
    mean_offset = sum(a.offset for a in annotators) / len(annotators)
    table = [{"annotator": a.name, "ratings": cal.counts.get(a.name, 0), "true offset": a.offset - mean_offset,
              "estimated offset": cal.offsets.get(a.name), "error": (cal.offsets[a.name] - (a.offset - mean_offset))
              if a.name in cal.offsets else None} for a in annotators]
    errors = [abs(r["error"]) for r in table if r["error"] is not None]
    truth = {k: q for k, q in responses.items()}
    summary = {
        "responses": len(items), "ratings": len(ratings), "pairs_train": len(train_pairs),
        "pairs_eval": len(eval_pairs),
        "heldout_prompts": sorted(heldout), "offset_mae": sum(errors) / len(errors), "offset_max_error": max(errors),
        "agreement_raw": truth_agreement(cal.raw_means, truth),
        "agreement_calibrated": truth_agreement(cal.scores, truth),
        "pair_accuracy_vs_truth": sum(truth[(p["prompt"], p["chosen"])] > truth[(p["prompt"], p["rejected"])]
                                      for p in pairs) / len(pairs),
        "mean_quality": sum(responses.values()) / len(responses), "annotators": table,
        "calibration_iterations": cal.iterations, "residual_std": cal.residual_std,
    }
    write_jsonl(out / "samples.jsonl", items)
    write_jsonl(out / "ratings.jsonl", ratings)
    write_jsonl(out / "calibrated_scores.jsonl", ({"prompt": p, "response": r, "score": s,
                                                   "raw_mean": cal.raw_means[(p, r)]}
                                                  for (p, r), s in cal.scores.items()))
    paths = {"pairs": write_jsonl(out / "pairs_train.jsonl", train_pairs),
             "eval_pairs": write_jsonl(out / "pairs_eval.jsonl", eval_pairs)}
    summary["seconds"] = time.time() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"paths": paths, "summary": summary, "truth": truth}


def truth_agreement(scores: dict, truth: dict) -> float:
    """Share of same-prompt response pairs with different hidden quality that ``scores`` order
    the same way (ties in ``scores`` count half)."""
    by_prompt: dict[str, list] = {}
    for key, s in scores.items():
        by_prompt.setdefault(key[0], []).append((s, truth[key]))
    agree = total = 0.0
    for rows in by_prompt.values():
        for (s1, q1), (s2, q2) in itertools.combinations(rows, 2):
            if q1 == q2:
                continue
            total += 1
            agree += 1.0 if (s1 - s2) * (q1 - q2) > 0 else 0.5 if s1 == s2 else 0.0
    return agree / total if total else float("nan")


def train_reward_model(cfg: PipelineConfig, sft_path: Path, feedback: dict, progress: bool = True) -> dict:
    """Bradley-Terry reward model on the calibrated pairs, initialised from the SFT model; held-out accuracy."""
    start = time.time()
    out = fresh_dir(cfg.output_dir, "reward")
    paths = feedback["paths"]
    args = RewardConfig(output_dir=str(out), model_name_or_path=str(sft_path), dataset_name=str(paths["pairs"]),
                        eval_dataset_name=str(paths["eval_pairs"]), num_train_epochs=cfg.rm_epochs,
                        learning_rate=cfg.rm_learning_rate, use_margin=False, **_loop_args(cfg, progress))
    RewardTrainer(args=args).train()
    seconds = time.time() - start
    scorer = metrics.reward_model_scorer(str(out))
    eval_pairs = read_jsonl(paths["eval_pairs"])
    prompts = [p["prompt"] for p in eval_pairs]
    chosen = scorer(prompts, [p["chosen"] for p in eval_pairs])
    rejected = scorer(prompts, [p["rejected"] for p in eval_pairs])
    result = metrics.pair_classification(chosen, rejected, seed=cfg.seed)
    truth = feedback["truth"]
    decided = [(c, r, truth[(p["prompt"], p["chosen"])] - truth[(p["prompt"], p["rejected"])])
               for c, r, p in zip(chosen, rejected, eval_pairs)
               if truth[(p["prompt"], p["chosen"])] != truth[(p["prompt"], p["rejected"])]]
    result["accuracy_vs_truth"] = sum(1.0 if (c - r) * gap > 0 else 0.5 if c == r else 0.0
                                      for c, r, gap in decided) / max(1, len(decided))
    (out / "heldout_metrics.json").write_text(json.dumps(result, indent=2))
    return {"path": out, "seconds": seconds, "metrics": result}


def _last(history: list[dict], key: str):
    return next((row[key] for row in reversed(history) if key in row), None)
