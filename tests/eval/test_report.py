"""Reports: Markdown and HTML with tables and plots."""

from rlhfkit.eval.report import Section, markdown_table, plot_bars, plot_curves, plot_distributions, write_report


def test_markdown_table_formats_numbers():
    table = markdown_table([{"policy": "SFT", "reward": 0.12345, "length": 21.06, "train time (s)": None}])
    assert table.splitlines()[0] == "| policy | reward | length | train time (s) |"
    assert "| SFT | 0.123 | 21.1 | – |" in table


def test_write_report_with_plots(tmp_path):
    curves = {"PPO": [{"examples": 0, "reward": 0.0, "KL": 0.0}, {"examples": 10, "reward": 1.0, "KL": 0.5}],
              "DPO": [{"examples": 0, "reward": 0.0, "KL": 0.0}, {"examples": 10, "reward": 0.7, "KL": None}]}
    images = [plot_curves(curves, ["reward", "KL"], tmp_path / "curves.png", x="examples"),
              plot_distributions({"a": [0.1, 0.2, 0.2], "b": [0.5, 0.9]}, tmp_path / "dist.png"),
              plot_bars({"PPO": 3.0, "DPO": 1.5}, tmp_path / "time.png")]
    assert images == ["curves.png", "dist.png", "time.png"]
    sections = [Section("Result", "Mean **reward** rose.\n\n- one `item`\n- two",
                        table=[{"policy": "PPO", "reward": 1.0}], images=images, pre="a -> b <c>")]
    md, html = write_report(sections, tmp_path, "A <title>")
    text = md.read_text()
    assert text.startswith("# A <title>") and "![Result](curves.png)" in text and "| PPO | 1.000 |" in text
    page = html.read_text()
    assert "<strong>reward</strong>" in page and "<li>one <code>item</code></li>" in page
    assert '<img src="time.png"' in page and "a -&gt; b &lt;c&gt;" in page and "<title>A &lt;title&gt;</title>" in page
    for name in images:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
