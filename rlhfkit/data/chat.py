"""Render prompts and completions to text with the tokenizer's chat template.

Texts pass through unchanged. Message lists go through
``tokenizer.apply_chat_template(..., tokenize=False)``: the prompt with
``add_generation_prompt=True`` (so it ends exactly where the assistant answer starts),
the completion as the rest of the full rendering. That split is only sound if the
template is prefix-stable (rendering more messages only appends text); it is checked,
and a template that rewrites earlier turns (e.g. one that drops past reasoning) raises
``DataError``.

Fallback when ``tokenizer.chat_template`` is None (a base model's tokenizer):

    <|system|>\\n{content}\\n        <|user|>\\n{content}\\n        <|tool|>\\n{content}\\n
    <|assistant|>\\n{content}{eos}  (the eos closes the turn; "\\n" when there is no eos)
    generation prompt: <|assistant|>\\n

The tokenizer is never modified (no chat_template is set on it).
"""

from __future__ import annotations

from .checks import clean_messages
from .errors import DataError


def _fallback(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    eos = getattr(tokenizer, "eos_token", None) or "\n"
    parts = []
    for message in messages:
        end = eos if message["role"] == "assistant" else "\n"
        parts.append(f"<|{message['role']}|>\n{message['content']}{end}")
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def render_messages(tokenizer, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None = None) -> str:
    """One conversation as text: the tokenizer's chat template, or the documented fallback.

    ``tools``: JSON schemas of the tools the model may call, handed to the template (``tools=``)
    so it can describe them; the fallback does not show them.
    """
    messages = clean_messages(messages)
    if getattr(tokenizer, "chat_template", None) is None:
        return _fallback(tokenizer, messages, add_generation_prompt)
    extra = {"tools": tools} if tools else {}
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             **extra)
    except Exception as err:  # noqa: BLE001 - Jinja raises many types; report them as data problems
        raise DataError(f"the tokenizer's chat template failed on {len(messages)} message(s) "
                        f"({type(err).__name__}: {err})") from err


def render_prompt(tokenizer, prompt, tools: list[dict] | None = None) -> str:
    """A prompt as text: a string as is, messages with the generation prompt appended (and ``tools``)."""
    if isinstance(prompt, str):
        return prompt
    return render_messages(tokenizer, prompt, add_generation_prompt=True, tools=tools)


def _suffix(full: str, prefix: str, what: str) -> str:
    if not full.startswith(prefix):
        raise DataError(
            f"the chat template is not prefix-stable: the rendering of {what} does not start with the rendering "
            f"of the messages before it ({prefix[-60:]!r} vs {full[:len(prefix)][-60:]!r}); the prompt/completion "
            "boundary cannot be found, so use a template that only appends text for new messages"
        )
    return full[len(prefix):]


def render_pair(tokenizer, prompt, completion) -> tuple[str, str]:
    """(prompt_text, completion_text) with ``prompt_text + completion_text`` the full rendering.

    Texts: returned as they are. Messages: ``prompt_text = render_prompt(prompt)`` and
    ``completion_text`` the rest of ``render(prompt + completion)``. A text completion
    for a message prompt is treated as one assistant message.
    """
    if isinstance(prompt, str):
        if not isinstance(completion, str):
            raise DataError("a text prompt cannot take a message-list completion; use messages for both")
        return prompt, completion
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    prompt_text = render_prompt(tokenizer, prompt)
    full = render_messages(tokenizer, list(prompt) + list(completion), add_generation_prompt=False)
    return prompt_text, _suffix(full, prompt_text, "the conversation with its completion")


def render_conversation(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """A conversation as consecutive text segments ``(text, is_assistant_answer)``.

    Every assistant message is one ``True`` segment: the text from where the generation
    prompt ends to where its rendering ends (its eos or end-of-turn marker included).
    Everything else (system, user, tool turns, role headers) is ``False``. The segments
    concatenate to the full rendering. Costs 2 renders per assistant turn + 1.
    """
    segments: list[tuple[str, bool]] = []
    done = ""  # rendering of the messages handled so far
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_messages(tokenizer, messages[:k], add_generation_prompt=True)
        segments.append((_suffix(before, done, f"the first {k} messages"), False))
        upto = render_messages(tokenizer, messages[: k + 1], add_generation_prompt=False)
        segments.append((_suffix(upto, before, f"the first {k + 1} messages"), True))
        done = upto
    full = render_messages(tokenizer, messages, add_generation_prompt=False)
    segments.append((_suffix(full, done, "the whole conversation"), False))
    return [(text, answer) for text, answer in segments if text]
