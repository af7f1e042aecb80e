"""Prompts and responses as safe HTML: Markdown (CommonMark, tables, strikethrough) with raw HTML off.

Model outputs are usually Markdown, with code blocks; an annotator judges them better rendered.
They are also untrusted text, so the renderer never passes markup through:

- raw HTML (``<script>``, ``<img onerror=...>``, ``<a href="javascript:...">``) is not parsed as HTML:
  markdown-it escapes it and it shows as the literal text it is;
- a link works only for ``http:``, ``https:``, ``mailto:`` or a scheme-less (relative) address; any
  other (``javascript:``, ``data:``, ``vbscript:``, obfuscated ones) stays plain text;
- images are off (an annotator judges text; a remote image would also leak who is reading);
- links open in a new tab with ``rel="noopener noreferrer nofollow"``.

The page's Content-Security-Policy (``script-src 'self'``, ``web.SECURITY_HEADERS``) is a second wall:
even markup that got through could not run inline script. Single newlines are kept as line breaks
(``breaks``), so plain text reads as it was written.
"""

from __future__ import annotations

import re
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

_SAFE_SCHEME = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)
_HAS_SCHEME = re.compile(r"^[^/?#]*:")  # "x:" before any "/", "?" or "#": an absolute URL with a scheme


def safe_link(url: str) -> bool:
    """Whether a link target may become an ``href`` (see the module docstring)."""
    url = url.strip()
    return bool(_SAFE_SCHEME.match(url)) or not _HAS_SCHEME.match(url)


def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable(["table", "strikethrough"])
    md.disable("image")
    md.validateLink = safe_link

    def link_open(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        tokens[idx].attrSet("target", "_blank")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)
    return md


_MD = _renderer()


def render_markdown(text: Any) -> Markup:
    """``text`` as sanitised HTML (a ``Markup``, so Jinja does not escape it again)."""
    return Markup(_MD.render(str(text or "")))


def chat_turns(meta: Any) -> list[dict[str, str]]:
    """The chat messages kept with a prompt (``Prompt.meta["messages"]``, see ``ingest``), or [] for plain text."""
    messages = meta.get("messages") if isinstance(meta, dict) else None
    if not isinstance(messages, list):
        return []
    return [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))}
            for m in messages if isinstance(m, dict)]


def plain(text: Any) -> Markup:
    """Escaped text (for places that show a short excerpt rather than the rendered document)."""
    return escape(str(text or ""))
