"""Tools, environments and rewards for examples/agents_calculator.yaml and examples/agents_games.yaml.

From the repository root the configs name them ``examples.agents:calculator`` and so on (the
current folder is on the import path). docs/agents.md explains each piece.
"""

import re


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression of integers.

    Args:
        expression: digits with + - * between them, e.g. "23+58".
    """
    if not re.fullmatch(r"\d+(?:[+\-*]\d+)*", expression):
        raise ValueError(f"not an expression of integers: {expression!r}")  # ends this episode, logged
    return str(eval(expression, {"__builtins__": {}}, {}))  # noqa: S307 - digits and + - * only


def correct_sum(prompts, completions, answer, **columns):
    """1.0 when the episode's last assistant turn is the right answer (the dataset's ``answer`` column)."""
    return [float(c[-1]["role"] == "assistant" and c[-1]["content"].strip() == a)
            for c, a in zip(completions, answer)]


class GuessingGame:
    """The Environment protocol: guess the secret in 1..8; each model turn is a guess.

    step returns (observation, reward, done): "higher"/"lower" and 0.0, or "correct", 1.0 and done;
    the episode's reward is the sum of its step rewards (a turn without a number costs 0.1).
    """

    def reset(self, secret: int) -> str:
        self.secret = int(secret)
        return "Guess a number from 1 to 8."

    def step(self, action: str):
        numbers = re.findall(r"\d+", action)
        if not numbers:
            return "Say a number from 1 to 8.", -0.1, False
        guess = int(numbers[-1])
        if guess == self.secret:
            return "correct", 1.0, True
        return ("higher" if guess < self.secret else "lower"), 0.0, False


class Counter:
    """TRL's environment_factory style: the public method ``add`` is a tool; get_reward scores the episode."""

    def reset(self, target: int, **columns) -> str:
        self.target, self.total = int(target), 0
        return f"Reach exactly {self.target} with the add tool."

    def add(self, n: int) -> str:
        """Add a number to the running total.

        Args:
            n: the number to add.
        """
        self.total += int(n)
        return f"total {self.total}"

    def get_reward(self) -> float:
        return 1.0 if self.total == self.target else 0.0


GAMES = {"guess": GuessingGame, "count": Counter}  # environment_factory by name: the dataset's environment column
