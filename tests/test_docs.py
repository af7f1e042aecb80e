import re
from pathlib import Path

import pytest

from rlhfkit.trainers import PPOConfig, RewardConfig, SFTConfig
from rlhfkit.trainers.docs import PAGES, render

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(PAGES))
def test_config_reference_pages_are_current(name):
    assert (ROOT / "docs" / name).read_text() == render(name), "regenerate with: python -m rlhfkit.trainers.docs"


@pytest.mark.parametrize("cls", [PPOConfig, SFTConfig, RewardConfig])
def test_every_config_field_has_help(cls):
    assert all(text.strip() for text in cls.field_help().values())


# Relative Markdown links in the docs must resolve inside the repository (a clone has nothing else).
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
DOC_FILES = ["README.md", "benchmarks/README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen, out, fenced = {}, set(), False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path):
    """(line, target) of every inline link outside code; link text may wrap over lines."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            line = ""
        lines.append("" if fenced else re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group()), line))
    text = "\n".join(lines)
    for m in LINK.finditer(text):
        yield text.count("\n", 0, m.start(1)) + 1, m.group(1)


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, link in _links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", link, re.I):  # http(s):, mailto: and other schemes
            continue
        where = f"{doc.relative_to(root)}:{number}: {link}"
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.is_relative_to(root):
            problems.append(f"{where} leaves the repository")
        elif not path.exists():
            problems.append(f"{where} points at a missing file")
        elif anchor and path.suffix == ".md" and path.is_file() and anchor.lower() not in _anchors(path):
            problems.append(f"{where} names no heading in {path.relative_to(root)}")
    return problems


@pytest.mark.parametrize("name", DOC_FILES)
def test_relative_links_resolve_inside_the_repository(name):
    problems = broken_links(ROOT / name)
    assert not problems, "\n".join(problems)


def test_link_check_reports_file_line_and_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Known limits\n")
    doc = tmp_path / "docs" / "a.md"
    doc.write_text("# A\n[ok](b.md#known-limits) [web](https://x.org/y) `[code](nowhere.md)`\n"
                   "[gone](missing.md)\n[out](../../DESIGN.md)\n[bad anchor](b.md#nope) [self](#a) [wrapped\n"
                   "text](b.md#nowhere)\n```\n[fenced](nowhere.md)\n```\n")
    assert broken_links(doc, tmp_path) == [
        "docs/a.md:3: missing.md points at a missing file",
        "docs/a.md:4: ../../DESIGN.md leaves the repository",
        "docs/a.md:5: b.md#nope names no heading in docs/b.md",
        "docs/a.md:6: b.md#nowhere names no heading in docs/b.md",
    ]
