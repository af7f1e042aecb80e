"""Tools a policy may call during a rollout: their schemas, the call format, running them safely.

A tool is a Python function (or an async one) with type hints and a Google-style docstring, as
Transformers' chat templates take them (``apply_chat_template(..., tools=[fn])``):

    def calculator(expression: str) -> str:
        \"\"\"Evaluate an arithmetic expression.

        Args:
            expression: digits and + - * / ( ), e.g. "12+7".
        \"\"\"

``tool_schemas`` turns such functions into the JSON schemas a template renders
(``transformers.utils.get_json_schema``); a function without that docstring is refused by name.

The call format. A model's turn is parsed for tool calls by, in this order:

1. a ``tool_parser`` you pass (``text -> list[ToolCall]``);
2. the tokenizer's own ``response_template`` (Transformers' ``tokenizer.parse_response``, which
   a model's chat template ships with), read for its ``tool_calls``;
3. the default format, one JSON object per call between tags (Hermes / Qwen style):

       <tool_call>{"name": "calculator", "arguments": {"expression": "12+7"}}</tool_call>

A turn with no call is the model's answer. A malformed call (bad JSON, no ``name``, arguments that
are not an object, an unknown tool, arguments the function does not take) is a
``ToolCallError``: the rollout ends that episode (``agents.py``), the run goes on.

Running a call (``call_with_timeout``) happens in a daemon thread that is given ``timeout``
seconds: a call that raises, runs past the timeout, or returns something that cannot be written
into the conversation (``render_result``: not text, a number, a bool, None or JSON-serialisable
lists and dicts; NaN; text that holds the tokenizer's special tokens) is an ``Outcome`` with a
failure ``reason`` instead of a value. A thread cannot be killed: a hung call keeps running in
the background until it returns, so a tool that can hang forever should time out on its own.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
TOOL_RESPONSE = "<tool_response>{}</tool_response>"  # how a result is written after a text prompt (no template)


@dataclass
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)


class ToolCallError(ValueError):
    """The model's turn holds a tool call that cannot be run (the message says why)."""


@dataclass
class Outcome:
    """The result of one call: ``value`` (rendered text) or a failure ``reason`` with a ``detail``."""
    value: Any = None
    reason: str | None = None   # None, "tool_error", "tool_timeout" or "bad_tool_output"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def tool_name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def tool_schemas(tools: dict[str, Callable]) -> list[dict]:
    """JSON schemas (``{"type": "function", "function": {...}}``) of ``tools`` (name -> function), in order."""
    from transformers.utils import get_json_schema

    out = []
    for name, fn in tools.items():
        try:
            schema = get_json_schema(fn)
        except Exception as err:  # noqa: BLE001 - DocstringParsingException, TypeHintParsingException, ...
            raise TypeError(f"tool {name!r}: {type(err).__name__}: {err}. A tool needs type hints on every argument "
                            "and a Google-style docstring with a description and an 'Args:' section (see "
                            "docs/agents.md)") from None
        schema["function"]["name"] = name
        out.append(schema)
    return out


def _as_call(raw, where: str) -> ToolCall:
    """A parsed call (``{"name", "arguments"}`` or ``{"function": {...}}``) -> ToolCall, or ToolCallError."""
    if isinstance(raw, dict) and isinstance(raw.get("function"), dict):
        raw = raw["function"]
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ToolCallError(f"{where} is not an object with a 'name': {str(raw)[:80]!r}")
    arguments = raw.get("arguments", {})
    if isinstance(arguments, str):  # some formats carry the arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise ToolCallError(f"{where}: the arguments of {raw['name']!r} are not JSON ({err})") from None
    if not isinstance(arguments, dict):
        raise ToolCallError(f"{where}: the arguments of {raw['name']!r} are not an object: {str(arguments)[:80]!r}")
    return ToolCall(raw["name"], arguments)


def parse_default(text: str) -> list[ToolCall]:
    """Every ``<tool_call>{json}</tool_call>`` in ``text``, in order (see the module docstring)."""
    calls = []
    for k, match in enumerate(TOOL_CALL.finditer(text)):
        try:
            raw = json.loads(match.group(1))
        except json.JSONDecodeError as err:
            raise ToolCallError(f"tool call {k} is not JSON ({err}): {match.group(1)[:80]!r}") from None
        calls.append(_as_call(raw, f"tool call {k}"))
    if not calls and "<tool_call>" in text:
        raise ToolCallError("'<tool_call>' is not closed by '</tool_call>'")
    return calls


def parse_tool_calls(text: str, tokenizer=None, prefix: str = "", schemas: list[dict] | None = None,
                     parser: Callable | None = None) -> list[ToolCall]:
    """The tool calls of one model turn ``text`` (``prefix``: the text before it, for a response template)."""
    if parser is not None:
        try:
            calls = parser(text)
        except ToolCallError:
            raise
        except Exception as err:  # noqa: BLE001 - a user parser's own failure is a bad call, not a crash
            raise ToolCallError(f"tool_parser failed: {type(err).__name__}: {err}") from None
        return [c if isinstance(c, ToolCall) else _as_call(c, f"tool call {k}") for k, c in enumerate(calls or [])]
    if getattr(tokenizer, "response_template", None) is not None:
        try:
            message = tokenizer.parse_response(text, prefix=prefix, tools=schemas or None)
        except Exception as err:  # noqa: BLE001 - the template's parser raises ValueError and friends
            raise ToolCallError(f"the tokenizer's response_template could not parse the turn: {err}") from None
        return [_as_call(c, f"tool call {k}") for k, c in enumerate((message or {}).get("tool_calls") or [])]
    return parse_default(text)


def check_arguments(fn, call: ToolCall) -> None:
    """ToolCallError unless ``fn`` accepts ``call.arguments`` as keyword arguments."""
    try:
        inspect.signature(fn).bind(**call.arguments)
    except TypeError as err:
        raise ToolCallError(f"{call.name}({', '.join(call.arguments)}): {err}") from None
    except ValueError:  # a builtin without a signature: let the call itself decide
        pass


def render_result(value, special_tokens=()) -> str:
    """A tool's return value as text for the conversation, or ValueError (the value is garbage)."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, (bool, int, float, list, dict)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"returned {value!r}, not a finite number")
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"returned a {type(value).__name__} that is not JSON ({err})") from None
    else:
        raise ValueError(f"returned a {type(value).__name__} ({str(value)[:60]!r}); return text, a number, a bool, "
                         "None, or JSON-serialisable lists and dicts")
    bad = [t for t in special_tokens if t and t in text]
    if bad:
        raise ValueError(f"returned text holding the tokenizer's special token {bad[0]!r} (it would be read as "
                         "one); escape or drop it")
    return text


def _run(fn, kwargs: dict):
    result = fn(**kwargs)
    if inspect.isawaitable(result):  # an async tool: run it to completion in this thread's own loop
        result = asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable):
    return await awaitable


def start_call(fn, kwargs: dict, name: str):
    """Start ``fn(**kwargs)`` in a daemon thread; ``finish_call`` waits for it."""
    box: dict = {}

    def target():
        try:
            box["value"] = _run(fn, kwargs)
        except BaseException as err:  # noqa: BLE001 - any failure of the tool ends its episode, never the run
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True, name=f"rlhfkit-tool-{name}")
    thread.start()
    return thread, box


def finish_call(started, name: str, timeout: float | None, deadline: float | None = None,
                render: Callable[[Any], Any] | None = None) -> Outcome:
    """Wait for a started call (at most ``timeout`` seconds, or until the monotonic ``deadline``) -> Outcome.

    ``render`` turns the value into what the caller keeps (``render_result`` for tools); its
    ValueError is a ``bad_tool_output``.
    """
    thread, box = started
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    thread.join(wait if wait is not None else timeout)
    if thread.is_alive():
        return Outcome(reason="tool_timeout", detail=f"{name} ran past {timeout:g} s (it keeps running in a "
                                                     "background thread)")
    if "error" in box:
        err = box["error"]
        return Outcome(reason="tool_error", detail=f"{name} raised {type(err).__name__}: {err}")
    try:
        return Outcome(value=render(box["value"]) if render is not None else box["value"])
    except ValueError as err:
        return Outcome(reason="bad_tool_output", detail=f"{name} {err}")


def call_with_timeout(fn, kwargs: dict, timeout: float | None, name: str | None = None,
                      render: Callable[[Any], Any] | None = None) -> Outcome:
    """``fn(**kwargs)`` in a daemon thread, given ``timeout`` seconds (None: no limit) -> Outcome."""
    name = name or tool_name(fn)
    deadline = None if timeout is None else time.monotonic() + timeout
    return finish_call(start_call(fn, kwargs, name), name, timeout, deadline, render)


def call_many(calls: list[tuple[Callable, dict, str]], timeout: float | None,
              render: Callable[[Any], Any] | None = None) -> list[Outcome]:
    """Run ``(fn, kwargs, name)`` calls concurrently, each given ``timeout`` seconds from now -> Outcomes in order."""
    deadline = None if timeout is None else time.monotonic() + timeout
    started = [start_call(fn, kwargs, name) for fn, kwargs, name in calls]
    return [finish_call(s, name, timeout, deadline, render) for s, (_, _, name) in zip(started, calls)]
