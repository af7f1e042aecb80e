"""Exact resume after kill -9 or Ctrl-C, for every trainer, in real subprocesses with dropout on.

Each trial runs a trainer uninterrupted, and again with SIGKILLs: inside a checkpoint write
(the process kills itself there: after the model files, or after the whole folder but
before its rename) or at a random moment from outside; or with a SIGINT (Ctrl-C) from outside
at a random moment, after which the trainer must have written a checkpoint of where it was. Each restart resumes from
``latest`` (or starts over when no checkpoint was complete). The final weights and every logged metric (timings aside)
must equal the uninterrupted run's, with exactly one metrics row per step.

``benchmarks/resume_trials.py`` runs many such trials and prints the figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.testing import hidden_rule_preferences, save_tiny
from rlhfkit.trainers import checkpoint

STEPS = 12
DROPOUT = dict(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
TIMING = ("seconds", "time/")

DRIVER = r'''
import os, signal, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
torch.set_num_threads(1)
from rlhfkit.trainers import checkpoint

def die():
    os.kill(os.getpid(), signal.SIGKILL)

# RLHFKIT_KILL="<n>:<phase>": SIGKILL itself during the n-th checkpoint write of this process,
# after the model files ("state") or after the whole folder, before its rename ("rename").
spec = os.environ.get("RLHFKIT_KILL")
if spec:
    n, phase = int(spec.split(":")[0]), spec.split(":")[1]
    calls = [0]
    write_state, atomic = checkpoint._write_state, checkpoint.atomic_save_dir

    def dying_write_state(folder, state):
        calls[0] += 1
        if phase == "state" and calls[0] == n:
            die()
        write_state(folder, state)

    def dying_atomic(target, write):
        def write_then_die(tmp):
            write(tmp)
            if phase == "rename" and calls[0] == n:
                die()
        return atomic(target, write_then_die)

    checkpoint._write_state, checkpoint.atomic_save_dir = dying_write_state, dying_atomic


def ppo(model_dir, critic_dir, out, steps, resume):
    from transformers import AutoTokenizer
    from rlhfkit import AutoModelForCausalLMWithValueHead, CriticModel, PPOConfig, PPOTrainer
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)  # the value head is freshly initialised: seed it, as a training script does
    cfg = PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=2, learning_rate=1e-3, critic_learning_rate=3e-3,
                    seed=7, adap_kl_ctrl=True, use_score_scaling=True, use_score_norm=True, ptx_coef=0.2,
                    ptx_batch_size=2, disable_dropout=False, log_with="jsonl", project_kwargs={"logging_dir": out},
                    output_dir=out, save_steps=2)
    trainer = PPOTrainer(cfg, AutoModelForCausalLMWithValueHead.from_pretrained(model_dir), None, tok,
                         critic=CriticModel.from_pretrained(critic_dir),
                         ptx_dataset=[f"the band {i} plays a rock song." for i in range(7)])
    prompts = ["the cat", "a dog", "we walk", "my friend", "the river", "they", "a robot"]
    reward = lambda ps, rs: [sum(c in "aeiou" for c in r) / 4.0 for r in rs]
    trainer.train(reward, prompts, steps=steps, generation_kwargs=dict(max_new_tokens=5),
                  resume_from_checkpoint=resume, progress=False)


if sys.argv[1] == "ppo":
    ppo(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] if len(sys.argv) > 6 else None)
else:
    from rlhfkit.cli import main
    sys.exit(main(sys.argv[1:]))
'''


# ---------------------------------------------------------------------------- the harness
def make_inputs(folder: Path) -> dict:
    """Tiny GPT-2 policy and reward model with dropout 0.1, SFT rows and preference pairs, the driver."""
    folder.mkdir(parents=True, exist_ok=True)
    save_tiny(folder / "lm", "gpt2", "causal-lm", hidden_size=32, **DROPOUT)
    save_tiny(folder / "rm", "gpt2", "reward", hidden_size=32, **DROPOUT)
    words = ["the cat", "a dog", "we", "they", "the band", "a robot", "my friend", "the river"]
    sft = [{"prompt": f"{w} number {i}", "completion": f" sings {w} all night."} for i, w in enumerate(words * 4)]
    prompts = [{"prompt": f"{w} number {i}"} for i, w in enumerate(words * 2)]
    for name, rows in (("sft.jsonl", sft), ("pairs.jsonl", hidden_rule_preferences(32)), ("prompts.jsonl", prompts)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "driver.py").write_text(DRIVER)
    return {"dir": folder, "driver": folder / "driver.py"}


def command(inputs: dict, trainer: str, out: Path, resume: bool) -> list[str]:
    d = inputs["dir"]
    base = [sys.executable, str(inputs["driver"])]
    if trainer == "ppo":
        return base + ["ppo", str(d / "lm"), str(d / "rm"), str(out), str(STEPS)] + (["latest"] if resume else [])
    model, data, extra = {"sft": ("lm", "sft.jsonl", []), "dpo": ("lm", "pairs.jsonl", ["--beta", "0.1"]),
                          # reward: accumulation, so a checkpoint also records a position inside an epoch of 4 steps
                          "reward": ("rm", "pairs.jsonl", ["--gradient_accumulation_steps", "2"]),
                          # grpo: 2 prompts x 2 completions per step, a KL to the reference, sampling RNG; few
                          # periodic checkpoints (the last --save_steps wins), so a Ctrl-C must write its own
                          "grpo": ("lm", "prompts.jsonl", ["--num_generations", "2", "--max_completion_length", "4",
                                                           "--beta", "0.1", "--save_steps", "5",
                                                           'reward_funcs=["tests.trainers.online_helpers:in_target"]'])
                          }[trainer]
    args = [trainer, "--model_name_or_path", str(d / model), "--dataset_name", str(d / data), "--output_dir", str(out),
            "--max_steps", str(STEPS), "--save_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-3",
            "--per_device_train_batch_size", "4", "--report_to", "jsonl", "--disable_tqdm", "true", "--seed", "11",
            *extra]
    return base + args + (["--resume_from_checkpoint", "latest"] if resume else [])


def _env(kill: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RLHFKIT_KILL", None)
    if kill:
        env["RLHFKIT_KILL"] = kill
    return env


def _rows(out: Path) -> int:
    try:
        return len((out / "metrics.jsonl").read_bytes().splitlines())
    except FileNotFoundError:
        return 0


def start(inputs: dict, trainer: str, out: Path, kill: str | None = None) -> subprocess.Popen:
    """Start a run; it resumes from ``latest`` whenever a complete checkpoint exists."""
    out.mkdir(parents=True, exist_ok=True)
    resume = bool(checkpoint.checkpoints(out))
    log = open(out.parent / f"{out.name}.log", "ab")
    return subprocess.Popen(command(inputs, trainer, out, resume), stdout=log, stderr=log, env=_env(kill))


def finish(proc: subprocess.Popen, out: Path, timeout: float = 300) -> int:
    rc = proc.wait(timeout=timeout)
    if rc not in (0, -signal.SIGKILL, -signal.SIGINT):  # Python dies of SIGINT after a KeyboardInterrupt
        log = (out.parent / f"{out.name}.log").read_text(errors="replace")
        raise AssertionError(f"run in {out} failed with exit code {rc}:\n{log[-4000:]}")
    return rc


def interrupted_run(inputs: dict, trainer: str, out: Path, rng: random.Random, kills: list[str]) -> list[str]:
    """Run with one SIGKILL per entry of ``kills``, resuming after each, then to the end; returns what happened.

    ``"write"``: the process kills itself in its 1st-3rd checkpoint write (after the model
    files, or after the whole folder but before its rename). ``"random"``: killed from
    outside a random time after it has logged 1-4 more steps. ``"sigint"``: the same moment,
    but Ctrl-C (SIGINT) instead of SIGKILL; the process must checkpoint the step it was at.
    """
    events = []
    for kind in kills:
        if kind == "write":
            spec = f"{rng.randint(1, 3)}:{rng.choice(['state', 'rename'])}"
            events.append(f"kill in write {spec}: rc={finish(start(inputs, trainer, out, kill=spec), out)}")
            continue
        proc, before, more = start(inputs, trainer, out), _rows(out), rng.randint(1, 4)
        deadline = time.time() + 300
        while proc.poll() is None and _rows(out) < before + more and time.time() < deadline:
            time.sleep(0.02)
        delay = rng.uniform(0.0, 0.3)
        time.sleep(delay)
        sig = signal.SIGINT if kind == "sigint" else signal.SIGKILL
        if proc.poll() is None:
            proc.send_signal(sig)
        rc = finish(proc, out)
        events.append(f"{sig.name} {delay:.2f} s after {more} more rows: rc={rc}")
        steps = [int(json.loads(line)["step"]) for line in (out / "metrics.jsonl").read_text().splitlines()] \
            if kind == "sigint" else []
        if kind == "sigint" and rc == -signal.SIGINT and max(steps) < STEPS:
            # Ctrl-C during training checkpoints every step logged so far (one that lands after the last
            # step, in the final save, needs none: a resume from the last checkpoint redoes the rest)
            latest = checkpoint.checkpoints(out)
            assert latest and latest[-1].name == f"checkpoint-{max(steps)}", (events, latest, steps)
    events.append(f"resume to the end: rc={finish(start(inputs, trainer, out), out)}")
    return events


def final_weights(out: Path, trainer: str) -> dict[str, torch.Tensor]:
    folder = out / "final" if trainer == "ppo" else out
    files = sorted(folder.rglob("*.safetensors")) if trainer == "ppo" else sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {f"{f.relative_to(folder)}:{k}": v for f in files for k, v in load_file(f).items()}


def metric_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def compare(reference: Path, resumed: Path, trainer: str) -> dict:
    """Max abs weight difference and whether the metric rows are identical."""
    a, b = final_weights(reference, trainer), final_weights(resumed, trainer)
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    rows_a, rows_b = metric_rows(reference), metric_rows(resumed)
    return {"max_abs_diff": diff, "rows_equal": rows_a == rows_b, "steps": [r["step"] for r in rows_b],
            "reference_steps": [r["step"] for r in rows_a], "rows_a": rows_a, "rows_b": rows_b}


# ---------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("resume-inputs"))


# One kill each keeps the file near a minute on 2 cores (each process spends ~7 s importing
# torch and Transformers); PPO, with the most state, gets both kinds. The sweep is benchmarks/resume_trials.py.
KILLS = {"sft": ["sigint"], "reward": ["write"], "dpo": ["random"], "ppo": ["write", "random"],
         "grpo": ["sigint", "random"]}


@pytest.mark.parametrize("trainer", list(KILLS))
def test_kill_minus_nine_then_resume_is_bit_exact(inputs, tmp_path, trainer):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    reference = start(inputs, trainer, tmp_path / "reference")  # runs alongside the interrupted one (2 cores)
    events = [f"trial seed {seed}"] + interrupted_run(inputs, trainer, tmp_path / "resumed", rng, KILLS[trainer])
    assert finish(reference, tmp_path / "reference") == 0
    result = compare(tmp_path / "reference", tmp_path / "resumed", trainer)
    assert result["reference_steps"] == list(range(1, STEPS + 1))
    assert result["steps"] == list(range(1, STEPS + 1)), events  # one row per step: none lost, none twice
    for a, b in zip(result["rows_a"], result["rows_b"]):
        assert a == b, (events, a, b)
    assert result["max_abs_diff"] <= 1e-6, events
    assert not [p.name for p in (tmp_path / "resumed").iterdir() if p.name.startswith((".tmp-", ".old-"))], events


def test_stale_temp_folders_are_cleaned_and_an_unfinished_replacement_is_undone(tmp_path):
    (tmp_path / ".tmp-checkpoint-4-abc").mkdir()
    (tmp_path / ".tmp-final-xyz").mkdir()
    (tmp_path / ".tmp-notours").mkdir()
    old = tmp_path / ".old-checkpoint-2-123"  # killed between the two renames of a re-save of step 2
    old.mkdir()
    (old / checkpoint.SUMMARY_FILE).write_text("{}")
    removed = checkpoint.clean_stale(tmp_path)
    assert sorted(p.name for p in removed) == [".tmp-checkpoint-4-abc", ".tmp-final-xyz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-notours", "checkpoint-2"]
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["checkpoint-2"]


def test_truncate_metrics_keeps_rows_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3)))
    offset = path.stat().st_size
    with open(path, "a") as fh:  # a killed run logged step 4 and 5 (half a line) after the checkpoint at 3
        fh.write(json.dumps({"step": 4}) + "\n" + '{"step": 5, "x"')
    checkpoint.truncate_metrics(path, offset, 3)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    checkpoint.truncate_metrics(path, None, 2)  # no offset: the step filter alone
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]


TWO_PROCESS_SCRIPT = r'''
import os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
from rlhfkit import SFTConfig, SFTTrainer
from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer
tok = tiny_tokenizer()
rows = [{"prompt": f"p{i % 7} x" + " y" * (i % 5), "completion": " y z."} for i in range(32)]
cfg = SFTConfig(output_dir=sys.argv[1], max_steps=6, save_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
                report_to="jsonl", logging_steps=1, disable_tqdm=True, seed=5,
                resume_from_checkpoint=sys.argv[2] if len(sys.argv) > 2 else None)
model = tiny_causal_lm("gpt2", tok, hidden_size=32, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
SFTTrainer(model=model, args=cfg, train_dataset=rows, processing_class=tok).train()
'''


@pytest.mark.slow
def test_two_processes_resume_with_each_ranks_rng(tmp_path):
    # Ranks see other rows (other lengths), so their dropout RNGs drift apart: each must get its own back.
    import shutil

    script = tmp_path / "train.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29519"]
    straight = subprocess.run(launcher + [str(script), str(tmp_path / "a")], env=_env(), capture_output=True, text=True,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    resumed = subprocess.run(launcher + [str(script), str(tmp_path / "b"), "latest"], env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
