"""Every shell command in README.md and docs/*.md runs as pasted, in order, from a fresh copy of the shipped files.

Each ```bash block is split into commands (a trailing backslash joins lines; comments are dropped).
A command runs unless ``SKIP`` lists it with the reason, and every ``SKIP`` entry must still match a
documented command, so the docs and this list cannot drift apart. ``rlhfkit ...`` commands run
in-process through ``rlhfkit.cli.main`` (the same entry point as the console script, without
paying the import once per command); ``accelerate launch`` runs as a subprocess. A document runs
after README.md in a workspace shared by the whole module, as a reader who followed the README
would have it: ``runs/`` holds what the earlier commands wrote.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "shell", "console")

# A command run in another form, with the reason: the full demo takes minutes, --quick writes the same folders in
# seconds (every stage runs; tests/test_demo.py checks them), so the documents that build on runs/demo run too.
INSTEAD = {"make demo": ("rlhfkit demo --quick --quiet --output_dir runs/demo", "the same folders, tiny sizes")}

# (document, start of the command) -> why it does not run here. Each entry must match a command.
SKIP = {
    ("README.md", "make test"): "the test suite itself (CI runs it)",
    ("README.md", "pip install"): "installs packages into the environment; `make setup` does the same from the lock",
    ("README.md", "rlhfkit feedback serve"): "a server that runs until stopped; tests/feedback/test_app.py drives the "
                                              "app and tests/feedback/test_browser.py a real browser",
    ("README.md", "rlhfkit feedback report"): "needs a project that people annotated in the browser; "
                                               "tests/feedback/test_feedback_cli.py runs report and export on a seeded project",
    ("README.md", "rlhfkit feedback export"): "as report",
    ("README.md", "rlhfkit reward --model_name_or_path runs/sft --dataset_name data/helpful"):
        "reads the export of an annotated project (above)",
    ("README.md", "rlhfkit control"): "PPO on CartPole/Pendulum for 300k-500k steps (minutes); tests/control runs "
                                      "the same command on a short budget",
    ("docs/control.md", "rlhfkit control"): "as in README.md",
    ("docs/demo.md", "make demo"): "run once, for README.md",
    ("docs/demo.md", "rlhfkit demo --config examples/demo.yaml"): "the full demo (minutes)",
    ("docs/demo.md", "rlhfkit demo --output_dir runs/demo-s1"): "the full demo (minutes)",
    ("docs/demo.md", "rlhfkit compare --config examples/compare.yaml --output_dir runs/compare-hack"):
        "PPO and DPO on the demo's full budget (minutes); tests/test_demo.py runs compare on the quick demo",
    ("docs/eval.md", "rlhfkit compare --config examples/compare.yaml"): "as in docs/demo.md",
    ("docs/ppo_cli.md", "make demo"): "run once, for README.md",
    ("docs/feedback.md", "rlhfkit reward --dataset_name runs/feedback"): "reads the export of an annotated project",
    ("docs/feedback.md", "rlhfkit feedback export"): "needs a project with judgements; tests/feedback/test_feedback_cli.py "
                                                      "runs examples/feedback_export.yaml on a seeded project",
    ("docs/feedback.md", "rlhfkit feedback prioritise"): "needs a project with items; tests/feedback/test_feedback_cli.py "
                                                          "prioritises a seeded project's items",
    ("docs/feedback.md", "rlhfkit feedback serve"): "as in README.md",
    ("docs/distributed.md", "rlhfkit sft --config examples/sft.yaml --accelerate_config zero3"):
        "needs DeepSpeed; tests/distributed/test_distributed.py launches zero3.yaml when it is installed",
}


def commands(doc: str) -> list[str]:
    """The shell commands of ``doc``'s ```bash blocks, in order."""
    out, block = [], None
    for line in (ROOT / doc).read_text().splitlines():
        if line.startswith("```"):
            if block is None:
                block = [] if line[3:].strip() in SHELL else False
            else:
                if block:
                    out.extend(_split(block))
                block = None
        elif block is not False and block is not None:
            block.append(line)
    return out


def _split(lines: list[str]) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(shlex.join(words))
    return out


def skipped(doc: str, command: str) -> str | None:
    return next((why for (d, start), why in SKIP.items() if d == doc and command.startswith(start)), None)


class Workspace:
    """A fresh copy of the shipped example files; documents run at most once, README.md first."""

    def __init__(self, path: Path):
        self.path, self.done = path, {}
        shutil.copytree(ROOT / "examples", path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
        (path / "rlhfkit").symlink_to(ROOT / "rlhfkit", target_is_directory=True)  # a clone has the package here

    def run_doc(self, doc: str, monkeypatch) -> list[str]:
        if doc != "README.md":
            self.run_doc("README.md", monkeypatch)
        if doc not in self.done:
            self.done[doc] = []
            for command in commands(doc):
                if skipped(doc, command) is None:
                    self.run(doc, command, monkeypatch)
                    self.done[doc].append(command)
        return self.done[doc]

    def run(self, doc: str, command: str, monkeypatch) -> None:
        command = INSTEAD.get(command, (command,))[0]
        words = shlex.split(command)
        monkeypatch.chdir(self.path)
        if words[0] == "rlhfkit":
            try:
                code = main(words[1:])
            except SystemExit as exit_:
                code = exit_.code
            assert code == 0, f"{doc}: `{command}` exited with {code}"
        elif words[:2] == ["accelerate", "launch"]:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu",
                   "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
            done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *words[2:]], cwd=self.path,
                                  env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{doc}: `{command}` failed:\n{done.stderr[-3000:]}"
        else:
            pytest.fail(f"{doc}: `{command}` is neither an rlhfkit nor an accelerate command: make it one, or add it "
                        "to SKIP in tests/test_docs_commands.py with the reason")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("fresh-clone"))


def test_every_skip_entry_still_matches_a_documented_command():
    for (doc, start), why in SKIP.items():
        assert any(c.startswith(start) for c in commands(doc)), f"SKIP entry {doc}: {start!r} matches nothing"
        assert why.strip()


@pytest.mark.parametrize("doc", [d for d in DOCS if commands(d)])
def test_the_commands_of_each_document_run_as_pasted(doc, workspace, monkeypatch):
    ran = workspace.run_doc(doc, monkeypatch)
    assert ran or all(skipped(doc, c) for c in commands(doc))
