"""Reports: Markdown and HTML pages with tables and matplotlib plots (PNG files beside them).

A report is a list of ``Section``s (a title, text, an optional table, images and
preformatted text). ``write_report`` renders it twice: ``<name>.md`` for reading on a
terminal or GitHub and a self-contained-looking ``<name>.html`` that references the same
PNGs. The plot helpers write one PNG each and return its file name.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (servers, CI)
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class Section:
    title: str
    text: str = ""                                   # paragraphs; lines starting "- " are a list
    table: list[dict] | None = None                  # rows with the same keys
    images: list[str] = field(default_factory=list)  # PNG file names relative to the report
    pre: str | None = None                           # preformatted text (samples, logs)


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(key: str, value) -> str:
    digits = 1 if any(k in key for k in ("time", "length", "seconds")) else 3
    return fmt(value, digits)


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join(" --- " for _ in keys) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(k, row.get(k)).replace("|", "/") for k in keys) + " |")
    return "\n".join(lines)


def html_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(k, r.get(k)))}</td>" for k in keys) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _text_html(text: str) -> str:
    out, items = [], []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if lines and all(line.startswith("- ") for line in lines):
            items = "".join(f"<li>{_inline_html(line[2:])}</li>" for line in lines)
            out.append(f"<ul>{items}</ul>")
        elif block.strip():
            out.append(f"<p>{_inline_html(' '.join(lines))}</p>")
    return "\n".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem;"
        "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;margin:.5rem 0}pre{background:#f7f7f7;padding:.8rem;overflow-x:auto}")


def write_report(sections: list[Section], output_dir, title: str, name: str = "report") -> tuple[Path, Path]:
    """Write ``<output_dir>/<name>.md`` and ``.html``; returns both paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, body = [f"# {title}", ""], []
    for s in sections:
        md += [f"## {s.title}", ""]
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            md += [s.text.strip(), ""]
            body.append(_text_html(s.text))
        if s.table:
            md += [markdown_table(s.table), ""]
            body.append(html_table(s.table))
        for image in s.images:
            md += [f"![{s.title}]({image})", ""]
            body.append(f'<img src="{html.escape(image)}" alt="{html.escape(s.title)}">')
        if s.pre:
            md += ["```", s.pre.rstrip(), "```", ""]
            body.append(f"<pre>{html.escape(s.pre.rstrip())}</pre>")
    md_path, html_path = out / f"{name}.md", out / f"{name}.html"
    md_path.write_text("\n".join(md))
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                         f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>\n"
                         + "\n".join(body) + "\n</body></html>\n")
    return md_path, html_path


# ---------------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_curves(curves: dict[str, list[dict]], keys: list[str], path, x: str = "step",
                titles: dict[str, str] | None = None) -> str:
    """One panel per key in ``keys``; one line per method in ``curves`` (rows with ``x`` and the keys)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for method, rows in curves.items():
            pts = [(r[x], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=method)
        ax.set_xlabel(x)
        ax.set_title((titles or {}).get(key, key))
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    return _save(fig, Path(path))


def plot_distributions(values: dict[str, list[float]], path, xlabel: str = "reward", bins: int = 12) -> str:
    """Histograms of every policy on common bins, drawn side by side within each bin."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    finite = [v for vals in values.values() for v in vals]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    width = (hi - lo) / bins
    edges = [lo + width * k for k in range(bins + 1)]
    bar = width / (len(values) + 1)
    for n, (name, vals) in enumerate(values.items()):
        counts = [0] * bins
        for v in vals:
            counts[min(bins - 1, int((v - lo) / width))] += 1
        ax.bar([e + bar * (n + 0.5) for e in edges[:-1]], counts, width=bar, align="edge", label=name)
    ax.set_xticks(edges[:: max(1, bins // 6)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("responses")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, Path(path))


def plot_bars(values: dict[str, float], path, ylabel: str = "seconds", title: str = "") -> str:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    names = list(values)
    bars = ax.bar(names, [values[n] or 0.0 for n in names], color="#4c78a8")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, Path(path))


# ---------------------------------------------------------------------------------- the eval command's page
def write_eval_report(results: dict, output_dir) -> tuple[Path, Path]:
    """eval.json, eval.md, eval.html and eval_rewards.png for ``rlhfkit eval``."""
    from .evaluate import summary_rows

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2, default=str))
    sections = []
    if "policies" in results:
        sections.append(Section("Policies", f"{results['prompts']} prompts x {results['samples_per_prompt']} "
                                "samples per policy; win rates against "
                                f"`{results['baseline']}` (ties count half); KL in nats per response.",
                                table=summary_rows(results)))
        first = next(iter(results["policies"].values()))
        for scorer in first["scores"]:
            image = plot_distributions({n: [s[scorer] for s in r["samples"]] for n, r in results["policies"].items()},
                                       out / f"eval_{_slug(scorer)}.png", xlabel=scorer)
            dist = [{"policy": n, **r["scores"][scorer]} for n, r in results["policies"].items()]
            sections.append(Section(f"Distribution of {scorer}", table=dist, images=[image]))
        lines = []
        for name, r in results["policies"].items():
            lines += [f"[{name}]"] + [f"  {s['prompt']!r} -> {s['response']!r}" for s in r["samples"][:4]]
        sections.append(Section("Samples", pre="\n".join(lines)))
    if "reward_model" in results:
        sections.append(Section("Reward model on labelled pairs", table=[results["reward_model"]]))
    return write_report(sections, out, "rlhfkit eval", name="eval")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
