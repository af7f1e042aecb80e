"""Multi-turn rollouts: the policy's turns, tool results and environment observations in one sequence.

An episode starts from a prompt and alternates two kinds of turns until it ends:

    prompt | model turn | inserted turn | model turn | inserted turn | ... | model turn
             policy        tool results /  policy                          policy
             tokens        observation     tokens                          tokens

It is kept as token ids (``Episode.ids``, everything after the prompt) and a ``policy_mask`` of
the same length: True on the tokens the policy sampled, False on inserted ones. Training treats
the whole sequence as the response (the model reads the tool results as context) and the mask as
the loss mask, so inserted tokens take no part in the loss, the KL or the entropy.

Where an episode's turns come from (``Agent``):

- ``tools``: Python functions the model calls in its turn (``tools.py``: schemas, call format,
  timeouts). A turn with calls is followed by one inserted turn holding every result; a turn
  without a call ends the episode ("answered").
- ``environment_factory``: a callable without arguments (a class) that makes one environment per
  episode, or a dict of them by name, the name read per prompt from the ``environment_column``
  of the dataset. ``reset(**columns)`` starts the episode (it gets the prompt's dataset columns
  its signature names, or all of them with ``**kwargs``) and may return an observation, appended
  to the prompt. Then either
    * the environment has ``step(action) -> (observation, reward, done)`` (the ``Environment``
      protocol): each model turn's text is the action, the observation is inserted as a user
      turn (or as the message, when it is a ``{"role", "content"}`` dict), ``done`` ends the
      episode; or
    * it has no ``step`` (TRL's ``environment_factory``): its public methods (not ``reset``,
      ``get_reward`` or ``_private``) are tools, next to ``tools``, bound to that episode's state.
  Its reward: ``get_reward()`` at the end of the episode when it has that method (the episode's
  reward), else the sum of ``step``'s per-turn rewards; it is the reward function
  ``environment`` (``environment_reward``), added to ``reward_funcs``.

Caps: at most ``max_tool_calling_iterations`` inserted turns (None: no limit), and at most
``max_completion_length`` tokens after the prompt, model and inserted tokens together (TRL's
rule): a model turn is sampled with what is left, and an inserted turn that does not fit ends
the episode. Failures end one episode, never the run: a call the parser cannot read, a tool that
raises, runs past ``tool_timeout`` seconds or returns garbage, an environment whose ``reset``,
``step`` or ``get_reward`` fails the same way. Each is logged (logger ``rlhfkit.rollout.agents``,
one warning per episode) and counted (``episode_metrics``); the episode keeps the tokens it has.

How inserted turns become tokens. Message prompts go through the chat template (with the tools'
schemas, ``tools=``): the inserted text is what the template renders after the model's own
tokens, i.e. ``render(history + [assistant, *results], add_generation_prompt=True)`` minus
``render(history, add_generation_prompt=True)`` minus the model's turn, so it closes the tool
turn and opens the next assistant turn. When the template writes the model's turn differently
(tool calls re-rendered), the inserted text starts after the model's end-of-turn token in the
rendering, or after the whole rendered turn. The template must be prefix-stable (checked). Text
prompts have no template: results are written as ``<tool_response>...</tool_response>`` each and
observations as they are. A model turn ends at EOS in both cases; the model's sampled tokens are
never re-tokenised.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from ..data import DataError, render_messages, render_prompt
from .evaluate import Sampled
from .rewards import score
from .tools import (TOOL_RESPONSE, ToolCallError, call_many, check_arguments, parse_tool_calls, render_result,
                    tool_name, tool_schemas)

logger = logging.getLogger(__name__)

# Why an episode ended (Episode.end); the failures are the ones logged as warnings.
END_REASONS = {
    "answered": "a model turn without a tool call (tools), or an EOS with nothing to step",
    "environment_done": "the environment's step returned done=True",
    "max_tool_calling_iterations": "the model went on after the last allowed inserted turn",
    "max_completion_length": "no room left for the next model turn or inserted turn (truncated)",
    "invalid_tool_call": "a tool call that cannot be parsed, names no tool, or has arguments the tool does not take",
    "tool_error": "a tool raised",
    "tool_timeout": "a tool ran past tool_timeout seconds",
    "bad_tool_output": "a tool returned something that cannot be written into the conversation",
    "environment_error": "the environment's factory, reset, step or get_reward raised, timed out or returned garbage",
}
FAILURES = ("invalid_tool_call", "tool_error", "tool_timeout", "bad_tool_output", "environment_error")
NOT_TOOLS = ("reset", "step", "get_reward")  # environment methods that are never offered as tools
RESERVED = ("environments", "episodes")  # what reward functions get besides the dataset's columns


class Environment(Protocol):
    """A turn-by-turn environment: the model's turn is the action."""

    def reset(self, **columns) -> str | None: ...

    def step(self, action: str) -> tuple[str | dict | None, float, bool]: ...


@dataclass
class Turn:
    role: str      # "assistant" for policy tokens; the inserted turn's role otherwise
    start: int     # token span in Episode.ids
    end: int
    text: str


@dataclass
class Episode:
    """One rollout: prompt tokens, then ``ids`` with ``policy_mask`` (see the module docstring)."""
    index: int                       # row in the generation (prompt k's g-th episode: k * G + g)
    prompt: object                   # text or messages, with reset's observation
    prompt_ids: list[int]
    tools: dict = field(default_factory=dict)     # name -> callable offered in this episode
    schemas: list = field(default_factory=list)   # their JSON schemas
    environment: object = None
    ids: list[int] = field(default_factory=list)
    policy_mask: list[bool] = field(default_factory=list)
    engine_logprobs: list[float] | None = None    # per token of ids (NaN on inserted ones), from an engine
    turns: list[Turn] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # the completion as messages
    step_rewards: list[float] = field(default_factory=list)
    environment_reward: float | None = None
    tool_calls: int = 0
    tool_failures: int = 0
    rounds: int = 0                  # inserted turns so far
    end: str | None = None
    detail: str = ""

    @property
    def truncated(self) -> bool:
        return self.end == "max_completion_length"

    def add(self, ids: list[int], policy: bool, role: str, text: str, logprobs=None) -> None:
        start = len(self.ids)
        self.ids += ids
        self.policy_mask += [policy] * len(ids)
        if self.engine_logprobs is not None or logprobs is not None:
            if self.engine_logprobs is None:
                self.engine_logprobs = [math.nan] * start
            lps = list(logprobs) if policy and logprobs is not None else []
            self.engine_logprobs += (lps + [math.nan] * len(ids))[:len(ids)]
        self.turns.append(Turn(role, start, len(self.ids), text))

    def finish(self, reason: str, detail: str = "") -> None:
        self.end, self.detail = reason, detail
        if reason in FAILURES:
            logger.warning("episode %d ended (%s): %s", self.index, reason, detail)


def environment_reward(prompts, completions, episodes, **columns):
    """The reward function ``environment``: each episode's environment reward (None where it gives none)."""
    return [e.environment_reward for e in episodes]


def environment_token_rewards(episode: Episode) -> list[float]:
    """The environment's reward of ``episode`` per token of ``episode.ids`` (0 elsewhere), for per-token methods (PPO).

    A ``step`` environment without ``get_reward``: each step's reward on the last policy token
    of the model turn it stepped (``step_rewards[j]`` belongs to the j-th model turn); otherwise
    ``environment_reward`` (``get_reward()``, or None: nothing) on the episode's last policy
    token. The sum is ``environment_reward`` either way. An episode without policy tokens gets none.
    """
    out = [0.0] * len(episode.ids)
    policy = [t for t, p in enumerate(episode.policy_mask) if p]
    if not policy:
        return out
    env = episode.environment
    if env is not None and callable(getattr(env, "step", None)) and not callable(getattr(env, "get_reward", None)):
        turns = [t for t in episode.turns if t.role == "assistant"]
        for reward, turn in zip(episode.step_rewards, turns):
            last = [t for t in policy if t < turn.end]
            out[last[-1] if last else policy[0]] += reward
    elif episode.environment_reward is not None:
        out[policy[-1]] += episode.environment_reward
    return out


def _public_methods(env) -> dict[str, Callable]:
    """An environment's tools: its public methods, bound, except reset / step / get_reward."""
    out = {}
    for name in dir(type(env)):
        if name.startswith("_") or name in NOT_TOOLS:
            continue
        attr = inspect.getattr_static(type(env), name)
        if isinstance(attr, (staticmethod, classmethod)) or inspect.isfunction(attr):
            out[name] = getattr(env, name)
    return out


def _reset_kwargs(reset, row: dict) -> dict:
    """The dataset columns ``reset`` takes: all with ``**kwargs``, else those it names."""
    try:
        params = inspect.signature(reset).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(row)
    return {p.name: row[p.name] for p in params if p.name in row and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                 p.KEYWORD_ONLY)}


def _observation(value):
    """reset's / step's observation: text, None, or one message dict; anything else is garbage."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("role"), str) and isinstance(value.get("content"), str):
        return {"role": value["role"], "content": value["content"]}
    raise ValueError(f"returned an observation of type {type(value).__name__} ({str(value)[:60]!r}); return text, "
                     "None or a {'role', 'content'} message")


def _step_result(value):
    if not (isinstance(value, (tuple, list)) and len(value) == 3):
        raise ValueError(f"returned {str(value)[:60]!r}, not (observation, reward, done)")
    observation, reward, done = value
    if isinstance(reward, torch.Tensor) and reward.numel() == 1:
        reward = reward.item()
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real) or not math.isfinite(float(reward)):
        raise ValueError(f"returned the reward {reward!r}, not a finite number")
    return _observation(observation), float(reward), bool(done)


def _finite(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"returned {value!r}, not a finite number or None")
    return float(value)


def with_observation(prompt, observation):
    """The prompt with reset's observation appended: to the text, or to the last user message."""
    if observation is None:
        return prompt
    if isinstance(prompt, str):
        return prompt + (observation if isinstance(observation, str) else observation["content"])
    messages = [dict(m) for m in prompt]
    if isinstance(observation, dict):
        return messages + [observation]
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"] = f"{messages[-1]['content']}\n\n{observation}" if messages[-1]["content"] \
            else observation
        return messages
    return messages + [{"role": "user", "content": observation}]


class Agent:
    """Tools, environments and caps of multi-turn rollouts (see the module docstring).

    ``tools``: functions (or a dict name -> function); ``environment_factory``: a callable
    without arguments, or a dict name -> callable chosen by ``row[environment_column]``;
    ``tool_parser``: ``text -> list[ToolCall]`` instead of the template's or the default format.
    One environment per factory is built here to check its tools' schemas.
    """

    def __init__(self, tokenizer, *, tools=None, environment_factory=None, environment_column: str = "environment",
                 max_tool_calling_iterations: int | None = None, max_completion_length: int = 256,
                 max_prompt_length: int | None = None, tool_timeout: float | None = 30.0,
                 tool_parser: Callable | None = None):
        self.tokenizer = tokenizer
        self.tools = self._named_tools(tools)
        self.schemas = tool_schemas(self.tools)
        if environment_factory is not None and not isinstance(environment_factory, dict) and \
                not callable(environment_factory):
            raise TypeError(f"environment_factory must be a class or callable without arguments, or a dict of them "
                            f"by name, got {type(environment_factory).__name__}")
        self.factories = environment_factory if isinstance(environment_factory, dict) else \
            ({None: environment_factory} if environment_factory is not None else {})
        for name, factory in self.factories.items():
            if not callable(factory):
                raise TypeError(f"environment_factory[{name!r}] must be a class or callable, got "
                                f"{type(factory).__name__}")
        self.environment_column = environment_column
        self.max_tool_calling_iterations = max_tool_calling_iterations
        self.max_completion_length = max_completion_length
        self.max_prompt_length = max_prompt_length
        self.tool_timeout = tool_timeout
        self.tool_parser = tool_parser
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.special = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
        self._env_schemas: dict = {}
        self.rewarded = False  # some environment gives a reward (get_reward or step)
        for name, factory in self.factories.items():
            env = factory()
            self.rewarded |= callable(getattr(env, "get_reward", None)) or callable(getattr(env, "step", None))
            self._tools_of(env)

    @staticmethod
    def _named_tools(tools) -> dict[str, Callable]:
        if tools is None:
            return {}
        items = tools.items() if isinstance(tools, dict) else [(tool_name(t), t) for t in
                                                              (tools if isinstance(tools, (list, tuple)) else [tools])]
        out = {}
        for name, fn in items:
            if not callable(fn):
                raise TypeError(f"tools: {name!r} is a {type(fn).__name__}, not a function")
            if name in out:
                raise ValueError(f"tools: two tools are named {name!r}; give each a distinct function name")
            out[name] = fn
        return out

    def _tools_of(self, env) -> tuple[dict, list]:
        """(tools, schemas) offered in an episode with ``env``: ``tools`` plus a tool environment's methods."""
        if env is None or callable(getattr(env, "step", None)):
            return self.tools, self.schemas
        methods = _public_methods(env)
        clash = sorted(set(methods) & set(self.tools))
        if clash:
            raise ValueError(f"tools and the environment {type(env).__name__} both have a tool named {clash[0]!r}")
        key = type(env)
        if key not in self._env_schemas:
            self._env_schemas[key] = tool_schemas(methods)
        return {**self.tools, **methods}, self.schemas + self._env_schemas[key]

    # ------------------------------------------------------------------ checks
    def check_columns(self, columns: dict, n: int, where: str = "the prompt dataset") -> None:
        """DataError on a column that clashes with what reward functions get, or (with a dict of
        factories) a row that names no known environment."""
        for name in RESERVED:
            if name in columns:
                raise DataError(f"{where}: the column {name!r} clashes with the reward-function argument of that "
                                "name in multi-turn rollouts; rename it")
        if None in self.factories or not self.factories:
            return
        names = columns.get(self.environment_column)
        known = sorted(map(str, self.factories))
        if names is None:
            raise DataError(f"{where}: environment_factory is a dict of {known}, so every row needs a column "
                            f"{self.environment_column!r} naming one; it has none (set environment_column)")
        for row, name in enumerate(names[:n]):
            if name not in self.factories:
                raise DataError(f"{where}: row {row}: {self.environment_column}={name!r} is not one of {known}")

    # ------------------------------------------------------------------ episodes
    def start(self, prompts: list, rows: list[dict], first_index: int = 0) -> list[Episode]:
        """One episode per prompt (``rows``: its dataset columns): environments made and reset concurrently."""
        envs, failures = [], {}
        for k, row in enumerate(rows):
            factory = self.factories.get(row.get(self.environment_column)) if None not in self.factories \
                else self.factories.get(None)
            env = None
            if factory is not None:
                try:
                    env = factory()
                except Exception as err:  # noqa: BLE001 - a factory failure ends this episode only
                    failures[k] = f"environment_factory raised {type(err).__name__}: {err}"
            envs.append(env)
        resets = [(k, env) for k, env in enumerate(envs) if env is not None]
        outcomes = call_many([(env.reset, _reset_kwargs(env.reset, rows[k]), f"{type(env).__name__}.reset")
                              for k, env in resets], self.tool_timeout, render=_observation)
        observations = {}
        for (k, _), outcome in zip(resets, outcomes):
            if outcome.ok:
                observations[k] = outcome.value
            else:
                failures[k] = outcome.detail
        episodes = []
        for k, (prompt, env) in enumerate(zip(prompts, envs)):
            prompt = with_observation(prompt, observations.get(k))
            tools, schemas = self._tools_of(env) if k not in failures else (self.tools, self.schemas)
            text = render_prompt(self.tokenizer, prompt, schemas if not isinstance(prompt, str) else None)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids = ids[-self.max_prompt_length:] if self.max_prompt_length else ids
            episode = Episode(first_index + k, prompt, ids, tools, schemas, env)
            if k in failures:
                episode.finish("environment_error", failures[k])
            episodes.append(episode)
        return episodes

    def run(self, episodes: list[Episode], sample: Callable) -> list[Episode]:
        """Play ``episodes`` to their end; ``sample(contexts, max_new_tokens) -> (turns, engine_logprobs | None)``.

        ``contexts`` are 1-D CPU token tensors (prompt + episode so far); one call per round samples
        the next model turn of every episode still going.
        """
        while active := [e for e in episodes if e.end is None]:
            budgets = [self.max_completion_length - len(e.ids) for e in active]
            contexts = [torch.tensor(e.prompt_ids + e.ids, dtype=torch.long) for e in active]
            turns, logprobs = sample(contexts, max(budgets))
            work = []
            for k, episode in enumerate(active):
                tokens = [int(t) for t in turns[k][:budgets[k]]]
                lps = [float(x) for x in logprobs[k][:budgets[k]]] if logprobs is not None else None
                action = self._model_turn(episode, tokens, lps, budgets[k])
                if action is not None:
                    work.append((episode, action))
            self._act([(e, a) for e, a in work if isinstance(a, str)])
            self._call_tools([(e, a) for e, a in work if isinstance(a, list)])
        self._rewards(episodes)
        return episodes

    def _model_turn(self, episode: Episode, tokens: list[int], logprobs, budget: int):
        """Record the policy's turn; returns the action to take (step text or tool calls), or None when it ended."""
        templated = getattr(self.tokenizer, "response_template", None) is not None  # its parser reads the prefix
        prefix = self.tokenizer.decode(episode.prompt_ids + episode.ids, skip_special_tokens=False) if templated \
            else ""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        episode.add(tokens, True, "assistant", text, logprobs)
        message = {"role": "assistant", "content": text}
        episode.messages.append(message)
        ended = bool(tokens) and tokens[-1] in self.eos_ids
        if not ended and len(tokens) >= budget:
            episode.finish("max_completion_length", f"the model turn used the last {budget} token(s)")
            return None
        if callable(getattr(episode.environment, "step", None)):
            return text
        if not episode.tools and self.tool_parser is None:
            episode.finish("answered")
            return None
        raw = self.tokenizer.decode(tokens, skip_special_tokens=False)
        try:
            calls = parse_tool_calls(raw, self.tokenizer, prefix, episode.schemas, self.tool_parser)
            for call in calls:
                if call.name not in episode.tools:
                    raise ToolCallError(f"no tool named {call.name!r} (tools: {sorted(episode.tools)})")
                check_arguments(episode.tools[call.name], call)
        except ToolCallError as err:
            episode.tool_calls += 1
            episode.tool_failures += 1
            episode.finish("invalid_tool_call", str(err))
            return None
        if not calls:
            episode.finish("answered")
            return None
        message["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in calls]
        if self.max_tool_calling_iterations is not None and episode.rounds >= self.max_tool_calling_iterations:
            episode.finish("max_tool_calling_iterations", f"{len(calls)} call(s) after {episode.rounds} round(s)")
            return None
        episode.tool_calls += len(calls)
        return calls

    def _call_tools(self, work: list) -> None:
        """Run every episode's calls, in order within an episode and concurrently across episodes."""
        results = {id(e): [] for e, _ in work}
        for j in range(max((len(calls) for _, calls in work), default=0)):
            batch = [(e, calls[j]) for e, calls in work if j < len(calls) and e.end is None]
            outcomes = call_many([(e.tools[c.name], c.arguments, c.name) for e, c in batch], self.tool_timeout,
                                 render=functools.partial(render_result, special_tokens=self.special))
            for (episode, call), outcome in zip(batch, outcomes):
                if outcome.ok:
                    results[id(episode)].append((call, outcome.value))
                else:
                    episode.tool_failures += 1
                    episode.finish(outcome.reason, outcome.detail)
        for episode, _ in work:
            if episode.end is None:
                done = results[id(episode)]
                messages = [{"role": "tool", "name": c.name, "content": text} for c, text in done]
                self._insert(episode, messages, "".join(TOOL_RESPONSE.format(text) for _, text in done))

    def _act(self, work: list) -> None:
        """Step each episode's environment with its model turn; insert the observation or end the episode."""
        outcomes = call_many([(functools.partial(e.environment.step, action), {},
                               f"{type(e.environment).__name__}.step") for e, action in work],
                             self.tool_timeout, render=_step_result)
        for (episode, _), outcome in zip(work, outcomes):
            if not outcome.ok:
                episode.finish("environment_error", outcome.detail)
                continue
            observation, reward, done = outcome.value
            episode.step_rewards.append(reward)
            if done:
                episode.finish("environment_done")
            elif self.max_tool_calling_iterations is not None and episode.rounds >= self.max_tool_calling_iterations:
                episode.finish("max_tool_calling_iterations", f"not done after {episode.rounds} round(s)")
            elif observation is None or (isinstance(observation, str) and not observation):
                episode.finish("environment_error", f"{type(episode.environment).__name__}.step returned no "
                                                    "observation for a game that is not done")
            else:
                message = observation if isinstance(observation, dict) else {"role": "user", "content": observation}
                self._insert(episode, [message], message["content"])

    def _insert(self, episode: Episode, messages: list[dict], plain: str) -> None:
        """Append an inserted turn (``messages``; ``plain``: its text after a text prompt), or end on the cap."""
        text = plain if isinstance(episode.prompt, str) else self._rendered(episode, messages)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.max_completion_length - len(episode.ids)
        if len(ids) >= room:
            episode.messages.extend(messages)
            episode.finish("max_completion_length", f"the {messages[0]['role']} turn of {len(ids)} token(s) leaves "
                                                    f"no room in the {room} left")
            return
        episode.add(ids, False, messages[0]["role"], text)
        episode.messages.extend(messages)
        episode.rounds += 1

    def _rendered(self, episode: Episode, messages: list[dict]) -> str:
        """The chat template's text between the model's last token and the next model turn."""
        history, assistant = list(episode.prompt) + episode.messages[:-1], episode.messages[-1]
        tools = episode.schemas or None
        before = render_messages(self.tokenizer, history, add_generation_prompt=True, tools=tools)
        with_turn = render_messages(self.tokenizer, history + [assistant], add_generation_prompt=False, tools=tools)
        after = render_messages(self.tokenizer, history + [assistant] + messages, add_generation_prompt=True,
                                tools=tools)
        if not (with_turn.startswith(before) and after.startswith(with_turn)):
            raise DataError("the chat template is not prefix-stable: rendering the conversation with one more turn "
                            "changes the text before it, so the inserted turn's tokens cannot be found; use a "
                            "template that only appends text for new messages (docs/agents.md)")
        turn = episode.turns[-1]
        tokens = episode.ids[turn.start:turn.end]
        generated = self.tokenizer.decode(tokens, skip_special_tokens=False)
        seg = with_turn[len(before):]
        if seg.startswith(generated):
            return after[len(before) + len(generated):]
        eos = self.tokenizer.decode(tokens[-1:], skip_special_tokens=False) if tokens and tokens[-1] in \
            self.eos_ids else ""
        if eos and eos in seg:
            return after[len(before) + seg.rindex(eos) + len(eos):]
        return after[len(with_turn):]

    def _rewards(self, episodes: list[Episode]) -> None:
        """Each episode's environment reward: get_reward() at its end, else the sum of step rewards."""
        started = [e for e in episodes if e.environment is not None and e.turns]  # reset worked
        asks = [e for e in started if callable(getattr(e.environment, "get_reward", None))]
        outcomes = call_many([(e.environment.get_reward, {}, f"{type(e.environment).__name__}.get_reward")
                              for e in asks], self.tool_timeout, render=_finite)
        for episode, outcome in zip(asks, outcomes):
            if outcome.ok:
                episode.environment_reward = outcome.value
            else:
                episode.finish("environment_error", outcome.detail)
        asked = {id(e) for e in asks}
        for episode in started:
            if id(episode) not in asked and callable(getattr(episode.environment, "step", None)):
                episode.environment_reward = float(sum(episode.step_rewards))  # 0.0 when cut before any step


def episode_metrics(episodes: list[Episode]) -> dict[str, float]:
    """Per-generation scalars: tool calls per episode and failed share of calls (TRL's names), end reasons, turns."""
    n = max(1, len(episodes))
    calls = sum(e.tool_calls for e in episodes)
    out = {"tools/call_frequency": calls / n,
           "tools/failure_frequency": sum(e.tool_failures for e in episodes) / max(1, calls),
           "episodes/model_turns_mean": sum(sum(t.role == "assistant" for t in e.turns) for e in episodes) / n,
           "episodes/inserted_tokens_mean": sum(len(e.ids) - sum(e.policy_mask) for e in episodes) / n}
    for reason in END_REASONS:
        out[f"episodes/end/{reason}"] = sum(e.end == reason for e in episodes) / n
    return out


@torch.no_grad()
def sample_episodes(policy, tokenizer, completions, agent: Agent, reward_funcs: list, prompts: list, columns: dict,
                    num_generations: int, *, reward_weights: list[float] | None = None, device=None, step: int = 0,
                    score_fn: Callable = score) -> Sampled:
    """``evaluate.sample_and_score`` for multi-turn rollouts: ``num_generations`` episodes per prompt, scored.

    Rows ``[k*G, (k+1)*G)`` are prompt k's. ``completions`` (``sampling.Completions``) samples every
    model turn. The reward functions get ``prompts`` (with reset's observation), ``completions``
    (message prompts: the completion's messages, assistant, tool and observation turns; text
    prompts: the text after the prompt), ``completion_ids``, the dataset's columns, and
    ``environments`` and ``episodes`` (one per completion; TRL passes ``environments``).
    ``Sampled.masks`` are the policy masks, ``truncated`` the episodes cut by the token cap.
    """
    G = num_generations
    repeated = [p for p in prompts for _ in range(G)]
    rows = [{k: v[i] for k, v in columns.items()} for i in range(len(prompts)) for _ in range(G)]
    episodes = agent.start(repeated, rows)
    completions.sync(policy, step)  # an engine samples from the weights being trained

    def sample(contexts, max_new_tokens):
        return completions.sample(policy, [c.to(device) for c in contexts], max_new_tokens=max_new_tokens)

    agent.run(episodes, sample)
    eos = next(iter(agent.eos_ids), tokenizer.pad_token_id)
    as_ids = (lambda values: torch.tensor(values, dtype=torch.long, device=device))
    queries = [as_ids(e.prompt_ids) for e in episodes]
    responses = [as_ids(e.ids or [eos]) for e in episodes]  # an episode that never started: one masked EOS
    masks = [torch.tensor(e.policy_mask or [False], dtype=torch.float32, device=device) for e in episodes]
    engine = None
    if any(e.engine_logprobs is not None for e in episodes):
        engine = [torch.tensor(e.engine_logprobs if e.engine_logprobs else [math.nan] * len(r), device=device)
                  for e, r in zip(episodes, responses)]
    seen = [e.prompt for e in episodes]
    values = [(e.messages or [{"role": "assistant", "content": ""}]) if not isinstance(e.prompt, str)
              else tokenizer.decode(e.ids, skip_special_tokens=True) for e in episodes]
    cols = {k: [row[k] for row in rows] for k in columns}
    cols.update(completion_ids=[r.tolist() for r in responses], environments=[e.environment for e in episodes],
                episodes=episodes)
    rewards, per_func = score_fn(reward_funcs, reward_weights, seen, values, cols)
    rewards = (rewards if device is None else rewards.to(device)).float()  # (N,)
    return Sampled(queries, responses, rewards, per_func, engine, seen, values, masks=masks,
                   truncated=[e.truncated for e in episodes], episodes=episodes)
