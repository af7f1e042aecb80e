"""``rlhfkit <command> --accelerate_config NAME|FILE --num_processes N``: the command under ``accelerate launch``.

The training commands (sft, reward, dpo, kto, grpo, rloo, ppo) take these two flags, as TRL's CLI
does. rlhfkit checks the command's arguments once in this process (a usage error is one line and
exit code 2, not one traceback per rank), then runs::

    python -m accelerate.commands.launch --config_file <file> [--num_processes N] -m rlhfkit.cli <command> ...

with the same arguments minus the two flags, and returns its exit code. ``NAME`` is one of the
configs shipped in ``rlhfkit/accelerate_configs/`` (``ddp``, alias ``multi_gpu``, ``fsdp2``,
``zero2``, ``zero3``; docs/distributed.md says what each does and what is verified); anything
else must be an Accelerate config file. Without ``--num_processes`` the file's ``num_processes``
applies (2 in the shipped files); without ``--accelerate_config``, ``--num_processes N`` uses ``ddp``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "accelerate_configs"
NAMED = {"ddp": "ddp.yaml", "multi_gpu": "ddp.yaml", "fsdp2": "fsdp2.yaml", "zero2": "zero2.yaml",
         "zero3": "zero3.yaml"}
NOT_SHIPPED = {"fsdp1": "FSDP1 is not supported (use fsdp2)", "zero1": "no ZeRO-1 config is shipped (use zero2)",
               "single_gpu": "one process needs no launcher: leave --accelerate_config out"}
LAUNCH_FLAGS = ("accelerate_config", "num_processes")
COMMANDS = ("sft", "reward", "dpo", "kto", "grpo", "rloo", "ppo")
HELP = {"accelerate_config": "Run the command under `accelerate launch` with this config: ddp (or multi_gpu), fsdp2, "
                             "zero2, zero3 (rlhfkit/accelerate_configs/) or a config file.",
        "num_processes": "Processes for `accelerate launch` (default: the config's num_processes; alone: ddp)."}


class LaunchError(ValueError):
    """A launch flag is wrong; the message names the flag and the fix."""


def split_launch_flags(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` without the launch flags (``--x v``, ``--x=v``, kebab-case too) and their values."""
    rest, found, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg[2:].replace("-", "_").partition("=") if arg.startswith("--") else ("", "", "")
        if name in LAUNCH_FLAGS:
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise LaunchError(f"--{name} needs a value ({HELP[name]})")
                value, i = argv[i + 1], i + 1
            if name in found:
                raise LaunchError(f"--{name} is given twice")
            found[name] = value
        else:
            rest.append(arg)
        i += 1
    return rest, found


def config_file(value: str) -> Path:
    """The Accelerate config file that ``--accelerate_config value`` names."""
    if value in NAMED:
        return CONFIG_DIR / NAMED[value]
    if value in NOT_SHIPPED:
        raise LaunchError(f"--accelerate_config {value}: {NOT_SHIPPED[value]}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise LaunchError(f"--accelerate_config: {value!r} is neither a shipped config ({', '.join(NAMED)}) nor a "
                          "file; give one of those names or the path of an Accelerate config YAML")
    return path


def launch_command(command: str, argv: list[str], flags: dict[str, str]) -> list[str]:
    """The ``accelerate launch`` command line that runs ``rlhfkit <command> <argv>`` with ``flags``."""
    if command not in COMMANDS:
        raise LaunchError(f"--{next(iter(flags))} works with the training commands ({', '.join(COMMANDS)}), not "
                          f"{command!r}")
    if "LOCAL_RANK" in os.environ:
        raise LaunchError("--accelerate_config/--num_processes inside `accelerate launch`: this process was launched "
                          "already; drop the two flags (or the outer accelerate launch)")
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(config_file(flags.get("accelerate_config", "ddp")))]
    if "num_processes" in flags:
        try:
            n = int(flags["num_processes"])
        except ValueError:
            n = 0
        if n < 1:
            raise LaunchError(f"--num_processes: must be a whole number >= 1, got {flags['num_processes']!r}")
        cmd += ["--num_processes", str(n)]
    return [*cmd, "-m", "rlhfkit.cli", command, *argv]


def run(cmd: list[str]) -> int:
    """Run the launcher in the foreground; Ctrl-C reaches the ranks (same process group) and is waited for."""
    print("launching: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    process = subprocess.Popen(cmd)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:  # the ranks got the SIGINT too and checkpoint-and-exit; wait for them
            continue
