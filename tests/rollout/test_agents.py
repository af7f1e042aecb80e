"""Multi-turn rollouts (rollout/agents.py): the policy mask token by token, tools, environments, caps, failures."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from rlhfkit.data import DataError, render_messages
from rlhfkit.rollout.agents import END_REASONS, Agent, environment_reward, episode_metrics
from tests.rollout.agent_helpers import (RELEASE, GuessingGame, Scripted, bisect_player, calculator, call, explode,
                                         garbage, hang)


@pytest.fixture(scope="module", autouse=True)
def release_hung_tools():
    yield
    RELEASE.set()


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def calculator_player(text: str) -> str:
    """Call the calculator on the user's expression, then answer with its result."""
    if "<|tool|>" in text:
        return text.split("<|tool|>")[-1].split("<|eos|>")[0]
    expression = text.split("<|user|>")[-1].split("=")[0]
    return call("calculator", expression=expression)


def test_policy_mask_of_a_hand_written_tool_episode(tokenizer):
    agent = Agent(tokenizer, tools=[calculator], max_completion_length=256)
    eos = tokenizer.eos_token_id
    turn1 = ids(tokenizer, call("calculator", expression="12+7")) + [eos]
    turn2 = ids(tokenizer, "19") + [eos]
    script = [turn1, turn2]
    episodes = agent.start([[{"role": "user", "content": "12+7="}]], [{}])
    agent.run(episodes, lambda contexts, n: ([torch.tensor(script.pop(0)) for _ in contexts], None))
    (episode,) = episodes
    inserted = ids(tokenizer, "<|tool|>19<|eos|><|assistant|>")  # the tiny template's tool turn + next header
    assert episode.end == "answered" and episode.rounds == 1 and episode.tool_calls == 1
    assert torch.equal(torch.tensor(episode.prompt_ids), torch.tensor(ids(tokenizer, "<|user|>12+7=<|eos|><|assistant|>")))
    assert torch.equal(torch.tensor(episode.ids), torch.tensor(turn1 + inserted + turn2))
    expected = [True] * len(turn1) + [False] * len(inserted) + [True] * len(turn2)
    for t, (got, want) in enumerate(zip(episode.policy_mask, expected)):  # token by token
        assert got == want, f"token {t} ({tokenizer.decode([episode.ids[t]])!r}): mask {got}, expected {want}"
    assert len(episode.policy_mask) == len(expected)
    # the whole sequence is exactly the chat template's rendering of the conversation
    full = render_messages(tokenizer, episode.prompt + episode.messages, add_generation_prompt=False)
    assert tokenizer.decode(episode.prompt_ids + episode.ids, skip_special_tokens=False) == full
    assert [m["role"] for m in episode.messages] == ["assistant", "tool", "assistant"]
    assert episode.messages[1]["content"] == "19" and episode.messages[0]["tool_calls"][0]["function"] == {
        "name": "calculator", "arguments": {"expression": "12+7"}}


def test_policy_mask_of_a_text_prompt_episode(tokenizer):
    agent = Agent(tokenizer, tools=[calculator], max_completion_length=256)
    eos = tokenizer.eos_token_id
    turn1 = ids(tokenizer, call("calculator", expression="3*4")) + [eos]
    turn2 = ids(tokenizer, " 12") + [eos]
    script = [turn1, turn2]
    episodes = agent.start(["3*4 ="], [{}])
    agent.run(episodes, lambda contexts, n: ([torch.tensor(script.pop(0)) for _ in contexts], None))
    (episode,) = episodes
    inserted = ids(tokenizer, "<tool_response>12</tool_response>")
    assert torch.equal(torch.tensor(episode.ids), torch.tensor(turn1 + inserted + turn2))
    assert episode.policy_mask == [True] * len(turn1) + [False] * len(inserted) + [True] * len(turn2)


def test_scripted_calculator_over_a_batch_and_the_metrics(tokenizer):
    agent = Agent(tokenizer, tools=[calculator], max_completion_length=256)
    prompts = [[{"role": "user", "content": f"{a}+{b}="}] for a, b in ((1, 2), (30, 4), (7, 7))]
    policy = Scripted(tokenizer, calculator_player)
    episodes = agent.run(agent.start(prompts, [{}] * 3), policy)
    assert policy.calls == 2  # one sampling call per round for the whole batch
    assert [e.messages[-1]["content"] for e in episodes] == ["3", "34", "14"]
    metrics = episode_metrics(episodes)
    assert metrics["tools/call_frequency"] == 1.0 and metrics["tools/failure_frequency"] == 0.0
    assert metrics["episodes/end/answered"] == 1.0 and metrics["episodes/model_turns_mean"] == 2.0
    assert set(metrics) >= {f"episodes/end/{r}" for r in END_REASONS}


@pytest.mark.parametrize("tool, reason", [(explode, "tool_error"), (hang, "tool_timeout"),
                                          (garbage, "bad_tool_output")])
def test_a_failing_tool_ends_only_its_own_episode(tokenizer, tool, reason, caplog):
    agent = Agent(tokenizer, tools=[calculator, tool], max_completion_length=256, tool_timeout=0.3)

    def player(text):
        if "<|tool|>" in text:
            return text.split("<|tool|>")[-1].split("<|eos|>")[0]
        if "broken" in text:
            return call(tool.__name__, text="x")
        return call("calculator", expression="2+2")

    prompts = [[{"role": "user", "content": "use the broken tool"}], [{"role": "user", "content": "2+2="}]]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rlhfkit.rollout.agents"):
        bad, good = agent.run(agent.start(prompts, [{}, {}]), Scripted(tokenizer, player))
    assert time.monotonic() - started < 5  # a hung tool costs its timeout, not the run
    assert bad.end == reason and bad.tool_failures == 1 and tool.__name__ in bad.detail
    assert good.end == "answered" and good.messages[-1]["content"] == "4"
    assert f"episode 0 ended ({reason})" in caplog.text
    assert bad.policy_mask == [True] * len(bad.ids)  # it keeps the turn that called the tool; nothing inserted
    assert episode_metrics([bad, good])["tools/failure_frequency"] == 0.5


@pytest.mark.parametrize("reply, detail", [
    ("<tool_call>{not json}</tool_call>", "not JSON"),
    ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "no tool named 'nope'"),
    ('<tool_call>{"name": "calculator", "arguments": {"expr": "1"}}</tool_call>', "missing a required argument"),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}', "not closed"),
])
def test_an_invalid_call_ends_its_episode(tokenizer, reply, detail):
    agent = Agent(tokenizer, tools=[calculator], max_completion_length=256)
    (episode,) = agent.run(agent.start([[{"role": "user", "content": "1="}]], [{}]),
                           Scripted(tokenizer, lambda text: reply))
    assert episode.end == "invalid_tool_call" and detail in episode.detail


def test_special_tokens_in_a_tool_result_are_garbage(tokenizer):
    def leaky(text: str) -> str:
        """Returns the EOS token's text.

        Args:
            text: ignored.
        """
        return "done<|eos|>"

    agent = Agent(tokenizer, tools=[leaky], max_completion_length=256)
    (episode,) = agent.run(agent.start([[{"role": "user", "content": "go"}]], [{}]),
                           Scripted(tokenizer, lambda text: call("leaky", text="x")))
    assert episode.end == "bad_tool_output" and "<|eos|>" in episode.detail


def test_caps_on_rounds_and_tokens(tokenizer):
    loop = Scripted(tokenizer, lambda text: call("calculator", expression="1+1"))  # calls forever
    agent = Agent(tokenizer, tools=[calculator], max_completion_length=1000, max_tool_calling_iterations=2)
    (episode,) = agent.run(agent.start([[{"role": "user", "content": "go"}]], [{}]), loop)
    assert episode.end == "max_tool_calling_iterations" and episode.rounds == 2 and episode.tool_calls == 2
    assert sum(t.role == "assistant" for t in episode.turns) == 3  # the third call is not run
    agent = Agent(tokenizer, tools=[calculator], max_completion_length=120)
    (episode,) = agent.run(agent.start([[{"role": "user", "content": "go"}]], [{}]), loop)
    assert episode.end == "max_completion_length" and episode.truncated and len(episode.ids) <= 120


def test_guessing_game_environment_with_a_scripted_policy(tokenizer):
    agent = Agent(tokenizer, environment_factory=GuessingGame, max_completion_length=256)
    prompts = [[{"role": "user", "content": "Play."}]] * 3
    rows = [{"secret": s} for s in (3, 8, 4)]
    episodes = agent.run(agent.start(prompts, rows), Scripted(tokenizer, bisect_player))
    assert [e.environment.guesses for e in episodes] == [[4, 2, 3], [4, 6, 7, 8], [4]]
    assert all(e.end == "environment_done" for e in episodes)
    assert [e.environment_reward for e in episodes] == [1.0, 1.0, 1.0]  # per-turn rewards summed
    first = episodes[0]
    assert first.prompt[-1]["content"] == "Play.\n\nGuess a number from 1 to 8."  # reset's observation
    assert [m["content"] for m in first.messages] == ["guess 4", "lower", "guess 2", "higher", "guess 3"]
    for turn in first.turns:  # observations are inserted, guesses are the policy's
        assert all(m == (turn.role == "assistant") for m in first.policy_mask[turn.start:turn.end])
    assert environment_reward(None, None, episodes) == [1.0, 1.0, 1.0]


def test_environments_by_name_from_a_column_and_tool_environments(tokenizer):
    class Counter:
        """A TRL-style environment: its public methods are the tools, get_reward the episode's reward."""

        def reset(self, **columns) -> None:
            self.total = 0

        def add(self, n: int) -> str:
            """Add n to the total.

            Args:
                n: how much to add.
            """
            self.total += n
            return str(self.total)

        def get_reward(self) -> float:
            return float(self.total)

    agent = Agent(tokenizer, environment_factory={"game": GuessingGame, "counter": Counter},
                  max_completion_length=256)
    with pytest.raises(DataError, match="row 1: environment='chess' is not one of"):
        agent.check_columns({"environment": ["game", "chess"]}, 2)
    with pytest.raises(DataError, match="needs a column 'environment'"):
        agent.check_columns({"secret": [1]}, 1)

    def player(text):
        if "Guess a number" in text:
            return "guess 4"
        return "done" if "<|tool|>" in text else call("add", n=5)

    rows = [{"environment": "game", "secret": 4}, {"environment": "counter", "secret": 0}]
    game, counter = agent.run(agent.start([[{"role": "user", "content": "Play."}]] * 2, rows),
                              Scripted(tokenizer, player))
    assert isinstance(game.environment, GuessingGame) and game.end == "environment_done"
    assert isinstance(counter.environment, Counter) and counter.end == "answered"
    assert counter.environment_reward == 5.0 and counter.messages[1] == {"role": "tool", "name": "add",
                                                                         "content": "5"}
    assert "add" in counter.tools and "get_reward" not in counter.tools and "reset" not in counter.tools


def test_a_failing_environment_ends_only_its_own_episode(tokenizer, caplog):
    class Fragile(GuessingGame):
        def step(self, action):
            if self.secret == 1:
                raise RuntimeError("the game server is down")
            if self.secret == 2:
                return "higher", float("nan"), False
            return super().step(action)

    agent = Agent(tokenizer, environment_factory=Fragile, max_completion_length=256)
    rows = [{"secret": 1}, {"secret": 2}, {"secret": 4}]
    with caplog.at_level(logging.WARNING, logger="rlhfkit.rollout.agents"):
        down, nan, fine = agent.run(agent.start(["Play. "] * 3, rows), Scripted(tokenizer, bisect_player))
    assert down.end == "environment_error" and "the game server is down" in down.detail
    assert nan.end == "environment_error" and "not a finite number" in nan.detail
    assert fine.end == "environment_done" and fine.environment_reward == 1.0
    assert down.environment_reward == 0.0  # the sum of the step rewards it got: none


def test_a_response_template_overrides_the_default_call_format(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.response_template = {"start_anchor": "<|assistant|>", "fields": {
        "content": {"content": "text"},
        "tool_calls": {"open": "[[", "close": "]]", "content": "json", "repeats": True}}}
    agent = Agent(tok, tools=[calculator], max_completion_length=256)

    def player(text):
        return "ok" if "<|tool|>" in text else '[[{"name": "calculator", "arguments": {"expression": "6*7"}}]]'

    (episode,) = agent.run(agent.start([[{"role": "user", "content": "6*7="}]], [{}]), Scripted(tok, player))
    assert episode.end == "answered" and episode.messages[1]["content"] == "42"
