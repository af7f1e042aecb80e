"""``rlhfkit demo``: the whole RLHF pipeline offline on a laptop CPU, in minutes.

1. generate a corpus (sentence openings completed in five styles, one of them "rock song"),
   train a tokenizer and pre-train a small GPT-2-shaped model from scratch (the base policy);
2. supervised fine-tuning on demonstrations (the SFT policy writes rock song now and then);
3. sample SFT responses; simulated annotators with personal biases rate them 1-3 from a
   hidden true quality (how rock-song a response is); calibrate the annotators and turn the
   calibrated ratings into preference pairs;
4. train a reward model on the pairs and measure it on held-out prompts;
5. PPO against the reward model and DPO on the pairs, same data and budget (``compare``);
6. evaluate base, SFT, PPO and DPO on held-out prompts and write ``report.md`` / ``report.html``.

Every stage runs the public trainers, so the demo is also the integration test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from ..eval.report import Section
from . import stages
from .compare import print_table, run_compare
from .config import CompareConfig, PipelineConfig, torch_threads

TRUE_QUALITY = "rlhfkit.pipeline.corpus:true_quality"


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"\n==> {text}", flush=True)


def run_demo(cfg: PipelineConfig | None = None, progress: bool = True) -> dict:
    """Run every stage into ``cfg.output_dir``; returns the summary (also in ``summary.json``)."""
    cfg = cfg or PipelineConfig()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    with torch_threads(cfg.num_threads) as threads:
        if progress:
            print(f"rlhfkit demo -> {out} ({threads} PyTorch CPU thread{'s' if threads > 1 else ''})", flush=True)
        return _run(cfg, out, progress, threads)


def _run(cfg: PipelineConfig, out: Path, progress: bool, threads: int) -> dict:
    start = time.time()
    _say(progress, f"1/6 corpus, tokenizer and pre-training from scratch -> {out / 'base'}")
    data = stages.make_corpus(cfg)
    base = stages.pretrain(cfg, data, progress)
    _say(progress, f"2/6 supervised fine-tuning on {cfg.sft_examples} demonstrations -> {out / 'sft'}")
    sft = stages.supervised_finetune(cfg, data, base["path"], progress)
    _say(progress, f"3/6 simulated annotators rate SFT samples; calibration; preference pairs -> {out / 'feedback'}")
    feedback = stages.collect_feedback(cfg, sft["path"])
    fb = feedback["summary"]
    if progress:
        print(f"{fb['responses']} responses, {fb['ratings']} ratings by {cfg.annotators} annotators; annotator offsets "
              f"estimated within {fb['offset_mae']:.3f} on average (max {fb['offset_max_error']:.3f}); "
              f"{fb['pairs_train']} training + {fb['pairs_eval']} held-out pairs", flush=True)
    _say(progress, f"4/6 reward model on the calibrated pairs -> {out / 'reward'}")
    rm = stages.train_reward_model(cfg, sft["path"], feedback, progress)
    if progress:
        print(f"reward model held-out pair accuracy {rm['metrics']['pairwise_accuracy']:.3f} "
              f"(against the hidden truth {rm['metrics']['accuracy_vs_truth']:.3f})", flush=True)
    _say(progress, "5/6 PPO against the reward model and DPO on the pairs (same budget) -> ppo/, dpo/")
    compare = CompareConfig(**cfg.methods(), policy=str(sft["path"]), reward_model=str(rm["path"]),
                            pairs=str(feedback["paths"]["pairs"]), prompts=str(data["paths"]["prompts"]),
                            eval_prompts=str(data["paths"]["eval_prompts"]), reward_fn=TRUE_QUALITY,
                            reward_fn_name="hidden quality", extra_policies=f"base={base['path']}")
    seconds = {"base": base["seconds"], "SFT": sft["seconds"], "reward model": rm["seconds"]}
    result = run_compare(compare, progress=progress, train_seconds=seconds, set_threads=False,
                         extra_sections=_sections(cfg, base, sft, feedback, rm, threads),
                         title="rlhfkit demo: pre-training, SFT, feedback, reward model, PPO and DPO offline")
    total = time.time() - start
    summary = {"table": result["table"], "reward_model": rm["metrics"], "feedback": fb, "seconds": result["seconds"],
               "total_seconds": total, "threads": threads, "report": result["report"],
               "report_html": result["report_html"],
               "output_dir": str(out.resolve())}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if progress:
        _say(True, f"6/6 comparison on held-out prompts (total {total / 60:.1f} min)")
        print_table(result["table"])
        print(f"\nreport: {result['report']} and {result['report_html']}", flush=True)
    return summary


def _sections(cfg: PipelineConfig, base: dict, sft: dict, feedback: dict, rm: dict, threads: int) -> list[Section]:
    fb, m = feedback["summary"], rm["metrics"]
    pipeline = Section("Pipeline", (
        f"- data: {cfg.pretrain_texts} generated pre-training texts ({cfg.pretrain_rock_share:.0%} rock song) and "
        f"{cfg.sft_examples} demonstrations ({cfg.sft_rock_share:.0%} rock song); no copyrighted text\n"
        f"- base: GPT-2 shape, {cfg.num_layers} layers x {cfg.hidden_size} wide, {base['parameters']:,} parameters, "
        f"vocabulary {cfg.vocab_size}, pre-trained {cfg.pretrain_steps} steps from scratch (loss {base['loss']:.3f})\n"
        f"- SFT: {cfg.sft_steps} steps on the demonstrations (loss {sft['loss']:.3f})\n"
        f"- feedback: {fb['responses']} SFT responses to {len(stages.corpus.TRAIN_PROMPTS)} training prompts, "
        f"{fb['ratings']} ratings (1-3) by {cfg.annotators} simulated annotators\n"
        f"- reward model: initialised from SFT, {cfg.rm_epochs:g} epochs on {fb['pairs_train']} calibrated pairs\n"
        "- hidden true quality: `rlhfkit.pipeline.corpus.rock_quality`: distinct rock-song words count +1/4 each "
        "(up to 4), repeated ones -1/8, clipped to [0, 1]; the annotators see it through their bias and noise, "
        "the policies never see it\n"
        f"- {threads} PyTorch CPU thread{'s' if threads > 1 else ''}"))
    calibration = Section("Annotators and calibration", (
        f"Each response was rated by {cfg.ratings_per_response} annotators: rating = clip(round(1.5 + 1.5 x quality "
        f"+ offset + noise), 1, 3), noise sd {cfg.annotator_noise_std}. Calibration fits rating = score + offset by "
        f"alternating least squares (offsets shrunk with {cfg.calibration_shrinkage:g} pseudo-ratings, mean 0) "
        f"without seeing the true offsets. Mean absolute error of the estimated offsets: **{fb['offset_mae']:.3f}** "
        f"rating points (max {fb['offset_max_error']:.3f}; clipping at 1 and 3 hides part of each bias).\n\n"
        f"Same-prompt response pairs ordered as the hidden quality orders them: raw mean ratings "
        f"{fb['agreement_raw']:.3f}, calibrated scores **{fb['agreement_calibrated']:.3f}** (ties count half). "
        f"Pairs kept with a calibrated gap >= {cfg.min_gap}: {fb['pairs_train']} for training, {fb['pairs_eval']} "
        f"on {cfg.heldout_prompts} held-out prompts; {fb['pair_accuracy_vs_truth']:.1%} of them agree with the "
        "hidden quality."), table=fb["annotators"])
    reward = Section("Reward model", (
        f"Held-out pairs (prompts the reward model never saw): accuracy **{m['pairwise_accuracy']:.3f}** against "
        f"the calibrated labels, {m['accuracy_vs_truth']:.3f} against the hidden quality. Precision, recall and F1 "
        "treat 'the first response is better' as positive, pairs shown in a seeded random order."),
        table=[{k: m[k] for k in ("pairs", "pairwise_accuracy", "accuracy_vs_truth", "precision", "recall", "f1")}])
    return [pipeline, calibration, reward]
