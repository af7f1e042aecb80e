"""Scripted policies, tools and environments for the multi-turn rollout tests (no model: turns are written out)."""

from __future__ import annotations

import re
import threading

import torch

CALL = '<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>'
RELEASE = threading.Event()  # set at the end of a test module so a "hung" tool's thread returns


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: digits and + - * ( ), e.g. "12+7".
    """
    if not re.fullmatch(r"[0-9+\-*() ]+", expression):
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    return str(eval(expression, {"__builtins__": {}}, {}))  # noqa: S307 - digits and operators only


def explode(text: str) -> str:
    """A tool that always raises.

    Args:
        text: ignored.
    """
    raise RuntimeError("the tool broke")


def hang(text: str) -> str:
    """A tool that does not return (until the test module releases it).

    Args:
        text: ignored.
    """
    RELEASE.wait(30)
    return "late"


def garbage(text: str) -> str:
    """A tool that returns an object no conversation can hold.

    Args:
        text: ignored.
    """
    return object()


def call(name: str, **arguments) -> str:
    import json

    return CALL.format(name=name, arguments=json.dumps(arguments))


class Scripted:
    """A policy as a function of the context text: ``reply(text) -> str``; each turn ends with EOS."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.calls = tokenizer, reply, 0

    def __call__(self, contexts, max_new_tokens):
        self.calls += 1
        out = []
        for context in contexts:
            text = self.tokenizer.decode(context, skip_special_tokens=False)
            ids = self.tokenizer(self.reply(text), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            out.append(torch.tensor(ids[:max_new_tokens]))
        return out, None


class GuessingGame:
    """Guess the secret number in 1..8: step returns 'higher' / 'lower' (reward 0) or 'correct' (reward 1, done)."""

    def __init__(self):
        self.secret, self.guesses = None, []

    def reset(self, secret: int) -> str:
        self.secret, self.guesses = int(secret), []
        return "Guess a number from 1 to 8."

    def step(self, action: str):
        found = re.findall(r"\d+", action)
        if not found:
            return "Say a number.", -0.1, False
        guess = int(found[-1])
        self.guesses.append(guess)
        if guess == self.secret:
            return "correct", 1.0, True
        return ("higher" if guess < self.secret else "lower"), 0.0, False


def bisect_player(text: str) -> str:
    """Binary search over 1..8, reading the game's answers so far from the conversation."""
    low, high = 1, 8
    for guess, answer in re.findall(r"guess (\d+)<\|eos\|><\|user\|>(higher|lower)", text):
        if answer == "higher":
            low = int(guess) + 1
        else:
            high = int(guess) - 1
    return f"guess {(low + high) // 2}"
