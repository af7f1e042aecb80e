"""Exact resume after ``kill -9`` or Ctrl-C, for every trainer, in real processes with dropout on.

The matrix that runs by default (16 trials): sft, reward (from the language model: a fresh score
head), dpo (LoRA), kto, ppo (``PPOTrainer.train``: the classic ``step()`` loop, with a separate
critic and ptx), ``rlhfkit ppo`` (LoRA, a reward model plus a reward function), grpo and rloo
(LoRA); 6 steps, a checkpoint every 2; each trainer under

- ``sigkill``: the run SIGKILLs itself inside its 1st or 2nd checkpoint write (after the model
  files, or before the folder's rename) and is restarted; then SIGKILL from the test process a
  random 0-0.06 s after the restarted run logged step 3 or 4; then a restart that resumes from
  ``latest`` (a complete checkpoint always exists by then) and runs to the end;
- ``sigint``: SIGINT (Ctrl-C) at such a moment, then the restart. The documented behaviour: the
  trainer checkpoints the last completed step and re-raises ``KeyboardInterrupt``, so the
  process dies of SIGINT (return code -2; 130 in a shell). The newest checkpoint must be
  ``checkpoint-<last logged step>``.

Each trial asserts that each interruption landed: the checkpoint-write kill ends with return
code -9; the signal ends the run with -9 (-2) after step 3 or 4 and at or before step 5, with no
final model written. A run that gets to step 5 before the signal arrives waits there for it
(the ``RLHFKIT_GATE`` hook after that step's metrics row; a Ctrl-C then takes the path it takes
anywhere, and one that PPO holds since its update began lets the run go on once it is sent), so
a signal never lands after training. Then the resumed run's final weights equal
the uninterrupted run's, ``torch.equal`` for every tensor, and every logged metric (timings
aside) equals, with exactly one metrics row per step. The uninterrupted run of each trainer is
shared by its two trials.

The runs are children of a fork server that has imported torch, Transformers and rlhfkit once
(a process start would cost ~7 s of CPU, a run ~1-3 s): each is a process of its own, with one
thread, killed and signalled like any other. The uninterrupted runs come from a server with
another ``PYTHONHASHSEED`` than the interrupted and resumed ones, as separate processes would.
``benchmarks/resume_trials.py`` runs many such trials with this harness.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.testing import hidden_rule_preferences, save_tiny
from rlhfkit.trainers import checkpoint

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6
SAVE_STEPS = 2
DROPOUT = dict(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
TIMING = ("seconds", "time/")
TRAINERS = ["sft", "reward", "dpo", "kto", "ppo", "rlhfkit-ppo", "grpo", "rloo"]
SIGNALS = {"sigkill": signal.SIGKILL, "sigint": signal.SIGINT}
LORA = ["--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "c_attn", "--lora_dropout", "0.1"]

DRIVER = r'''
"""One training run per child of a fork server: ``driver.py serve ROOT`` reads JSON requests on stdin."""
import atexit, json, os, select, signal, sys, time, traceback
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
torch.set_num_threads(1)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def install_hooks():
    from rlhfkit.trainers import checkpoint, mechanics
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
    # RLHFKIT_STEPS=<file>: note each step this process logs there (metrics.jsonl may still hold a
    # killed run's rows); RLHFKIT_GATE=<step>: after that step's row, wait for the signal the test
    # sends (a Ctrl-C then takes the path it takes anywhere else: raised here, or held by sigint_deferred),
    # or for the file RLHFKIT_SENT, which the test writes once it has sent it (a Ctrl-C that arrived
    # before the gate and is being held).
    steps_file, gate = os.environ.get("RLHFKIT_STEPS"), int(os.environ.get("RLHFKIT_GATE", "0"))
    if steps_file:
        log = mechanics.Mechanics.log

        def gated_log(self, metrics, step):
            log(self, metrics, step)
            with open(steps_file, "a") as fh:
                fh.write(f"{step}\n" + ("gate\n" if step == gate else ""))
            if step == gate:
                wait_for_signal(os.environ["RLHFKIT_SENT"], 120.0)

        mechanics.Mechanics.log = gated_log


def wait_for_signal(sent, limit):
    got, previous = [], signal.getsignal(signal.SIGINT)

    def note(signum, frame):
        got.append(signum)
        if callable(previous):
            previous(signum, frame)  # Python's default handler raises KeyboardInterrupt here

    signal.signal(signal.SIGINT, note)
    try:
        deadline = time.monotonic() + limit
        while not got and not os.path.exists(sent) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        signal.signal(signal.SIGINT, previous)
    if not got and not os.path.exists(sent):
        print("gate: no signal arrived", file=sys.stderr, flush=True)
        os._exit(3)


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


def run(argv):
    install_hooks()
    if argv[0] == "ppo-script":
        ppo(argv[1], argv[2], argv[3], int(argv[4]), argv[5] if len(argv) > 5 else None)
        return 0
    from rlhfkit.cli import main
    return main(argv)


def finish_process(rc):
    """Leave as the interpreter would: exit handlers, flushed streams; an uncaught Ctrl-C dies of SIGINT."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if rc == "sigint":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(rc)


def child(request):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(null, 0), os.dup2(log, 1), os.dup2(log, 2)
    os.close(null), os.close(log)
    sys.stdin, sys.stdout, sys.stderr = open(0, closefd=False), open(1, "w", buffering=1, closefd=False), \
        open(2, "w", buffering=1, closefd=False)
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
    for key in ("RLHFKIT_KILL", "RLHFKIT_GATE", "RLHFKIT_STEPS", "RLHFKIT_SENT"):
        os.environ.pop(key, None)
    os.environ.update(request["env"])
    sys.argv = ["rlhfkit", *request["argv"]]
    try:
        rc = run(request["argv"])
        rc = rc if isinstance(rc, int) else 0
    except SystemExit as exit:
        rc = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except KeyboardInterrupt:
        traceback.print_exc()
        rc = "sigint"
    except BaseException:
        traceback.print_exc()
        rc = 1
    finish_process(rc)


def serve(root):
    sys.path.insert(0, root)
    import accelerate, peft, transformers  # noqa: F401  what every run imports, imported once here
    from transformers.models.gpt2 import modeling_gpt2  # noqa: F401
    import rlhfkit.cli, rlhfkit.pipeline.ppo_run, rlhfkit.trainers, rlhfkit.trainers.online  # noqa: F401
    import tests.trainers.online_helpers, tests.trainers.test_resume_kill  # noqa: F401  reward functions
    children, buffer = set(), b""

    def say(message):
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    say({"ready": os.getpid()})
    while True:
        readable, _, _ = select.select([0], [], [], 0.005)
        if readable:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    try:
                        child(request)
                    finally:
                        os._exit(1)
                children.add(pid)
                say({"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            say({"pid": pid, "rc": os.waitstatus_to_exitcode(status)})
    for pid in children:  # the test process went away: so do its runs
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    serve(sys.argv[2])
'''


def vowel_share(prompts, completions, **columns):
    """A rule reward for ``rlhfkit ppo`` runs: the share of vowels in the completion."""
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


# ---------------------------------------------------------------------------- processes
def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    for key in ("RLHFKIT_KILL", "RLHFKIT_GATE", "RLHFKIT_STEPS", "RLHFKIT_SENT"):
        env.pop(key, None)
    return env


class ForkServer:
    """A process that has imported everything a run needs and forks one child per run."""

    def __init__(self, driver: Path, log: Path, hash_seed: int):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(driver), "serve", str(ROOT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(log, "ab"),
                                     env={**_env(), "PYTHONHASHSEED": str(hash_seed)})
        self.cond, self.pids, self.rcs, self.ready, self.gone = threading.Condition(), {}, {}, False, False
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            message = json.loads(line)
            with self.cond:
                if "rc" in message:
                    self.rcs[message["pid"]] = message["rc"]
                elif "id" in message:
                    self.pids[message["id"]] = message["pid"]
                else:
                    self.ready = True
                self.cond.notify_all()
        with self.cond:
            self.gone = True
            self.cond.notify_all()

    def _await(self, what, timeout: float):
        with self.cond:
            if not self.cond.wait_for(lambda: what() is not None or self.gone, timeout):
                raise TimeoutError(f"no answer from the fork server in {timeout} s")
            if what() is None:
                raise RuntimeError(f"the fork server died:\n{self.log.read_text(errors='replace')[-3000:]}")
            return what()

    def spawn(self, argv: list[str], log: Path, env: dict | None = None) -> "Child":
        with self.cond:
            self._next += 1
            request_id = self._next
        self.proc.stdin.write((json.dumps({"id": request_id, "argv": argv, "log": str(log), "env": env or {}})
                               + "\n").encode())
        self.proc.stdin.flush()
        return Child(self, self._await(lambda: self.pids.get(request_id), 300))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Child:
    """One run (a forked process) with the parts of ``subprocess.Popen`` the harness uses."""

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid = server, pid

    def poll(self) -> int | None:
        with self.server.cond:
            return self.server.rcs.get(self.pid)

    def wait(self, timeout: float) -> int:
        return self.server._await(self.poll, timeout)

    def send_signal(self, sig) -> bool:
        """Signal the run if it is still running; returns whether it was."""
        if self.poll() is not None:
            return False
        os.kill(self.pid, sig)
        return True

    def kill(self) -> None:
        try:
            self.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass


def fork_servers(driver: Path, logs: Path) -> tuple[ForkServer, ForkServer]:
    """(for uninterrupted runs, for interrupted and resumed runs), with different hash seeds."""
    seeds = random.Random().sample(range(1, 2**31), 2)
    return ForkServer(driver, logs / "server-a.log", seeds[0]), ForkServer(driver, logs / "server-b.log", seeds[1])


# ---------------------------------------------------------------------------- the harness
def make_inputs(folder: Path) -> dict:
    """Tiny GPT-2 policy and reward model with dropout 0.1, SFT rows, preference pairs, prompts, the driver."""
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


def command(inputs: dict, trainer: str, out: Path, resume: bool, steps: int = STEPS) -> list[str]:
    """The run's arguments for the driver: ``rlhfkit`` CLI arguments, or ``ppo-script`` for PPOTrainer.train."""
    d = inputs["dir"]
    if trainer == "ppo":
        return ["ppo-script", str(d / "lm"), str(d / "rm"), str(out), str(steps)] + (["latest"] if resume else [])
    if trainer == "rlhfkit-ppo":
        args = ["ppo", f"model_name_or_path={d / 'lm'}", f"dataset_name={d / 'prompts.jsonl'}", f"output_dir={out}",
                f"reward_model_path={d / 'rm'}", "reward_funcs=tests.trainers.test_resume_kill:vowel_share",
                "reward_weights=1.0,0.5", "per_device_train_batch_size=4", "mini_batch_size=2", "num_ppo_epochs=2",
                "max_new_tokens=4", "learning_rate=1e-3", f"max_steps={steps}", f"save_steps={SAVE_STEPS}", "seed=11",
                "report_to=jsonl", "disable_dropout=false", "use_peft=true", "lora_r=4", "lora_target_modules=c_attn",
                "lora_dropout=0.1"]
        return args + (["resume_from_checkpoint=latest"] if resume else [])
    online = ["--num_generations", "2", "--max_completion_length", "4", "--beta", "0.1",
              'reward_funcs=["tests.trainers.online_helpers:in_target"]']
    model, data, extra = {"sft": ("lm", "sft.jsonl", []),
                          "dpo": ("lm", "pairs.jsonl", ["--beta", "0.1", *LORA]),
                          "kto": ("lm", "pairs.jsonl", ["--disable_dropout", "false"]),
                          # from the language model: a fresh score head; accumulation: a checkpoint also
                          # records a position inside an epoch of 4 steps
                          "reward": ("lm", "pairs.jsonl", ["--gradient_accumulation_steps", "2"]),
                          # 2 prompts x 2 completions per step, a KL to the reference, sampling RNG
                          "grpo": ("lm", "prompts.jsonl", online),
                          "rloo": ("lm", "prompts.jsonl", [*online, *LORA]),
                          }[trainer]
    args = [trainer, "--model_name_or_path", str(d / model), "--dataset_name", str(d / data), "--output_dir", str(out),
            "--max_steps", str(steps), "--save_steps", str(SAVE_STEPS), "--logging_steps", "1",
            "--learning_rate", "1e-3", "--per_device_train_batch_size", "4", "--report_to", "jsonl",
            "--disable_tqdm", "true", "--seed", "11", *extra]
    return args + (["--resume_from_checkpoint", "latest"] if resume else [])


def start(server: ForkServer, inputs: dict, trainer: str, out: Path, env: dict | None = None,
          steps: int = STEPS) -> Child:
    """Start a run; it resumes from ``latest`` whenever a complete checkpoint exists."""
    out.mkdir(parents=True, exist_ok=True)
    resume = bool(checkpoint.checkpoints(out))
    return server.spawn(command(inputs, trainer, out, resume, steps), out.parent / f"{out.name}.log", env)


def _log(out: Path) -> str:
    return (out.parent / f"{out.name}.log").read_text(errors="replace")[-4000:]


def finish(proc: Child, out: Path, expect: int = 0, timeout: float = 300) -> int:
    rc = proc.wait(timeout)
    assert rc == expect, f"run in {out} ended with return code {rc}, expected {expect}:\n{_log(out)}"
    return rc


def noted_steps(path: Path) -> list[str]:
    """What ``RLHFKIT_STEPS`` noted: the steps this run logged, and ``gate`` when it waited at the gate."""
    try:
        lines = path.read_text().split("\n")[:-1]  # whole lines only: the run may be writing the last one
    except FileNotFoundError:
        return []
    return [x for x in lines if x == "gate" or x.isdigit()]


def reached(noted: list[str], step: int) -> bool:
    """Whether the run has logged ``step`` or a later one (a resumed run may start past it)."""
    return any(x == "gate" or int(x) >= step for x in noted)


def logged_steps(out: Path) -> list[int]:
    try:
        lines = (out / "metrics.jsonl").read_bytes().splitlines()
    except FileNotFoundError:
        return []
    return [int(json.loads(line)["step"]) for line in lines if line.endswith(b"}")]


def final_folder(out: Path, trainer: str) -> Path:
    return out / "final" if trainer in ("ppo", "rlhfkit-ppo") else out


def final_written(out: Path, trainer: str) -> bool:
    return any(final_folder(out, trainer).glob("*.safetensors"))


def signalled_run(server: ForkServer, inputs: dict, trainer: str, out: Path, sig: signal.Signals, after: int,
                  delay: float) -> dict:
    """Run until step ``after`` is logged, wait ``delay`` s, send ``sig``; assert it cut the run short.

    The run waits at step ``after + 2`` (at most STEPS - 1) for the signal should it get that far.
    """
    gate = min(after + 2, STEPS - 1)
    assert after <= gate < STEPS
    noted, sent = out.parent / f"{out.name}.steps", out.parent / f"{out.name}.sent"
    noted.unlink(missing_ok=True), sent.unlink(missing_ok=True)
    proc = start(server, inputs, trainer, out, env={"RLHFKIT_GATE": str(gate), "RLHFKIT_STEPS": str(noted),
                                                    "RLHFKIT_SENT": str(sent)})
    deadline = time.time() + 300
    while proc.poll() is None and not reached(noted_steps(noted), after) and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    assert proc.send_signal(sig), f"the run ended before the signal:\n{_log(out)}"
    sent.write_text(sig.name)
    finish(proc, out, expect=-sig)
    event = {"signal": sig.name, "after_step": after, "delay_s": round(delay, 3), "gate": gate,
             "last_logged_step": max(logged_steps(out), default=0), "at_gate": "gate" in noted_steps(noted),
             "rc": -sig, "checkpoints": [p.name for p in checkpoint.checkpoints(out)]}
    assert after <= event["last_logged_step"] <= gate, event  # landed during training, before the gate let go
    assert not final_written(out, trainer), event  # the run never got to its final save
    return event


def interrupted_run(server: ForkServer, inputs: dict, trainer: str, out: Path, rng: random.Random,
                    kills: list[str]) -> list[dict]:
    """Interrupt a run once per entry of ``kills``, restarting after each, then run to the end.

    ``"sigkill"`` / ``"sigint"``: that signal from this process, a random 0-0.06 s after the run
    logged step 3 or 4, or a later one when it resumed past it (``signalled_run``); after a Ctrl-C
    the newest checkpoint must be the last logged step's. ``"write"``: the process kills itself in
    its 1st or 2nd checkpoint write, after the model files or after the whole folder but before
    its rename. Each restart resumes from ``latest``. Returns what happened, one dict per run.
    """
    events = []
    for kind in kills:
        if kind == "write":
            spec = f"{rng.randint(1, 2)}:{rng.choice(['state', 'rename'])}"
            proc = start(server, inputs, trainer, out, env={"RLHFKIT_KILL": spec})
            events.append({"kill_in_write": spec, "rc": finish(proc, out, expect=-signal.SIGKILL),
                           "checkpoints": [p.name for p in checkpoint.checkpoints(out)]})
            continue
        event = signalled_run(server, inputs, trainer, out, SIGNALS[kind], rng.randint(3, 4), rng.uniform(0.0, 0.06))
        events.append(event)
        if kind == "sigint":  # Ctrl-C during training checkpoints the last completed step
            assert event["checkpoints"][-1:] == [f"checkpoint-{event['last_logged_step']}"], events
        else:  # step 3 was logged after checkpoint-2 was complete: the restart resumes
            assert event["checkpoints"], events
    resume_from = [p.name for p in checkpoint.checkpoints(out)][-1:]
    events.append({"resume_from": resume_from[0] if resume_from else None,
                   "rc": finish(start(server, inputs, trainer, out), out)})
    return events


def final_weights(out: Path, trainer: str) -> dict[str, torch.Tensor]:
    folder = final_folder(out, trainer)
    files = sorted(folder.rglob("*.safetensors")) if folder.name == "final" else sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {f"{f.relative_to(folder)}:{k}": v for f in files for k, v in load_file(f).items()}


def metric_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def compare(reference: Path, resumed: Path, trainer: str) -> dict:
    """Which tensors differ (``torch.equal``), the largest difference, and the metric rows of both runs."""
    a, b = final_weights(reference, trainer), final_weights(resumed, trainer)
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    diff = max(((a[k].float() - b[k].float()).abs().max().item() for k in unequal), default=0.0)
    rows_a, rows_b = metric_rows(reference), metric_rows(resumed)
    return {"tensors": len(a), "unequal": unequal, "max_abs_diff": diff, "rows_equal": rows_a == rows_b,
            "steps": [r["step"] for r in rows_b], "reference_steps": [r["step"] for r in rows_a],
            "rows_a": rows_a, "rows_b": rows_b}


def assert_exact(result: dict, events) -> None:
    """One metrics row per step in both runs, every row equal, every tensor equal."""
    assert result["reference_steps"] == list(range(1, STEPS + 1))
    assert result["steps"] == list(range(1, STEPS + 1)), events  # one row per step: none lost, none twice
    for a, b in zip(result["rows_a"], result["rows_b"]):
        assert a == b, (events, {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
    assert not result["unequal"], (events, result["max_abs_diff"], result["unequal"][:10])


# ---------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("resume-inputs"))


@pytest.fixture(scope="module")
def servers(inputs):
    a, b = fork_servers(inputs["driver"], inputs["dir"])
    started: list[Child] = []
    yield a, b, started
    for proc in started:
        proc.kill()
    a.close(), b.close()


@pytest.fixture(scope="module")
def baselines(servers, inputs, tmp_path_factory):
    """One uninterrupted run per trainer, started when its first trial starts, shared by both trials."""
    root, runs = tmp_path_factory.mktemp("resume-baselines"), {}

    def baseline(trainer: str, wait: bool) -> Path:
        out = root / trainer
        if trainer not in runs:
            runs[trainer] = start(servers[0], inputs, trainer, out)
            servers[2].append(runs[trainer])
        if wait:
            finish(runs[trainer], out)
        return out

    return baseline


# The sigkill trial first kills the run inside its 1st or 2nd checkpoint write (the process kills
# itself there), restarts it, then kills the restarted run from outside.
KILLS = {"sigkill": ["write", "sigkill"], "sigint": ["sigint"]}


@pytest.mark.parametrize("kind", list(KILLS))
@pytest.mark.parametrize("trainer", TRAINERS)
def test_interrupted_run_resumes_exactly(inputs, servers, baselines, tmp_path, trainer, kind):
    seed = random.randrange(2**32)
    baselines(trainer, wait=False)  # runs alongside the interrupted one (2 cores)
    events = [f"trial seed {seed}"] + interrupted_run(servers[1], inputs, trainer, tmp_path / "resumed",
                                                      random.Random(seed), KILLS[kind])
    reference = baselines(trainer, wait=True)
    print(trainer, kind, events)
    assert_exact(compare(reference, tmp_path / "resumed", trainer), events)
    assert not [p.name for p in (tmp_path / "resumed").iterdir() if p.name.startswith((".tmp-", ".old-"))], events


def test_a_fresh_reward_head_and_lora_adapters_start_from_the_seed(tmp_path):
    # torch seeds itself differently in every process: without seeding first, the run (and a resume
    # of it, whose first part trained other weights) could not be reproduced
    from transformers import AutoModelForSequenceClassification

    from rlhfkit.trainers import RewardConfig
    from rlhfkit.trainers.setup import load_model_and_tokenizer

    save_tiny(tmp_path / "lm", "gpt2", "causal-lm", hidden_size=32)
    cfg = RewardConfig(model_name_or_path=str(tmp_path / "lm"), output_dir=str(tmp_path / "out"), seed=3,
                       use_peft=True, lora_r=4, lora_target_modules="c_attn")
    weights = []
    for process_seed in (1, 2):
        torch.manual_seed(process_seed)
        model, _ = load_model_and_tokenizer(None, None, cfg, AutoModelForSequenceClassification, "SEQ_CLS",
                                            num_labels=1)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    assert any("lora_A" in n for n in weights[0]) and any("score" in n for n in weights[0])
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_a_lora_checkpoint_loads_back_into_the_adapter_exactly(tmp_path):
    import peft

    from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer

    def lora_model(seed):
        torch.manual_seed(seed)
        model = tiny_causal_lm("gpt2", tiny_tokenizer(), hidden_size=32)
        return peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False))

    trained, fresh = lora_model(0), lora_model(1)
    trained.save_pretrained(tmp_path / "checkpoint-2")
    assert not (tmp_path / "checkpoint-2" / "model.safetensors").exists()  # PEFT writes the adapter alone
    checkpoint.load_model_weights(fresh, tmp_path / "checkpoint-2")
    mine, theirs = dict(trained.named_parameters()), dict(fresh.named_parameters())
    assert all(torch.equal(mine[n], theirs[n]) for n in mine if "lora_" in n)
    trained.base_model.model.save_pretrained(tmp_path / "full")  # full weights: not this LoRA run's checkpoint
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        checkpoint.load_model_weights(fresh, tmp_path / "full")


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
