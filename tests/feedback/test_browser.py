"""End to end in a real browser: admin sets up a project, an annotator judges with the keyboard,
the admin watches progress and downloads the export, and a reward model trains on it.

Chromium (Debian's ``/usr/bin/chromium``) drives the app served by uvicorn in a background
thread on a free port with a temporary SQLite database. Without chromium the test is skipped,
unless ``RLHFKIT_REQUIRE_BROWSER`` is set (CI sets it, so CI fails instead of silently skipping).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import pytest

from rlhfkit.feedback import service
from rlhfkit.feedback.app import create_app

from .live import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ROWS = [{"prompt": "Describe the sea.", "responses": ["the river shines by the sea.", "a dog waits."]},
        {"prompt": "Sing a line.", "responses": ["the band sings like a rock song.", "they sleep."]}]


def _require_browser():
    """The Playwright module, or a skip (a failure when RLHFKIT_REQUIRE_BROWSER is set) saying what is missing."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is missing (pip install playwright)"
    if missing and os.environ.get("RLHFKIT_REQUIRE_BROWSER"):
        pytest.fail(f"browser test required (RLHFKIT_REQUIRE_BROWSER is set) but {missing}")
    if missing:
        pytest.skip(f"browser test skipped: {missing}")
    from playwright import sync_api

    return sync_api


@pytest.fixture
def sync_api():
    return _require_browser()


@pytest.fixture
def server(sync_api, tmp_path):
    """The app on a free port in a thread; yields (base URL, admin token, app)."""
    app = create_app(f"sqlite:///{tmp_path / 'feedback.db'}", secret="browser-test-secret-0123456789")
    with app.state.sessions() as s:  # the first admin comes from the CLI in real use
        _, admin_token = service.add_annotator(s, "ada", admin=True)
    with serving(app) as base:
        yield base, admin_token, app


def _sign_in(page, base: str, token: str) -> None:
    page.goto(f"{base}/signin")
    page.get_by_label("Personal token").fill(token)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Signed in as")


def _judge_with_keyboard(page) -> list[str]:
    """Judge every item using only keys; returns the kinds in the order they came."""
    kinds = []
    for done in range(1, 20):
        if page.locator("text=Nothing left for you here").count():
            return kinds
        form = page.locator("form.judge")
        kind = form.get_attribute("data-kind")
        kinds.append(kind)
        if kind == "rating":
            page.keyboard.press("3")  # first response: 3, then focus moves on to the second
            page.keyboard.press("1")
        elif kind == "pair":
            page.keyboard.press("1")  # left is better
            page.keyboard.press("x")  # clearly
            assert form.locator('input[name="winner"][value="left"]').is_checked()
            assert form.locator('input[name="strength"][value="2"]').is_checked()
        else:
            first = form.locator(".ranking > li").first.get_attribute("data-response")
            page.keyboard.press("d")  # the focused (first) response moves down
            assert form.locator(".ranking > li").nth(1).get_attribute("data-response") == first
            assert form.locator(f'input[name="rank_{first}"]').input_value() == "2"
        page.keyboard.press("Enter")
        page.wait_for_selector(f'.done-count[data-done="{done}"]')  # htmx swapped the next item in
    raise AssertionError("the queue did not end")


def test_admin_and_annotator_in_a_browser_then_train_on_the_export(sync_api, server, tmp_path, tokenizer):
    base, admin_token, app = server
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            admin_ctx = browser.new_context(accept_downloads=True)
            admin = admin_ctx.new_page()
            # console errors include CSP violations and failed loads
            admin.on("console", lambda m: m.type == "error" and problems.append(f"{m.text} at {m.location}"))
            _sign_in(admin, base, admin_token)
            assert admin.url.endswith("/admin")

            # project, import through the upload form, two annotators (tokens shown once)
            new = admin.locator("form", has_text="New project")
            new.get_by_label("Name").fill("helpfulness")
            new.get_by_label("Annotators per item").fill("1")
            new.get_by_label("Gold rate").fill("0")
            new.get_by_role("button", name="Create project").click()
            admin.wait_for_url("**/admin/projects/*")
            project_url = admin.url
            upload = admin.locator("form", has_text="Import responses")
            upload.locator('input[type="file"]').set_input_files(str(data_file))
            for kind in ("pair", "ranking"):  # rating is ticked already
                upload.locator(f'input[name="kinds"][value="{kind}"]').check()
            upload.get_by_role("button", name="Import").click()
            admin.wait_for_selector("text=Imported rows.jsonl")
            assert "new items: 2 rating, 2 pair, 2 ranking" in admin.locator(".notice.ok").inner_text()
            tokens = {}
            for name in ("bob", "cy"):
                admin.goto(f"{base}/admin")
                person = admin.locator("form", has_text="Add a person")
                person.get_by_label("Name").fill(name)
                person.get_by_role("button", name="Add and show the token").click()
                tokens[name] = admin.locator("[data-token]").inner_text().strip()
            admin.goto(f"{base}/admin")
            assert admin.locator("[data-token]").count() == 0  # not shown again
            admin.goto(project_url)
            assert admin.locator('[data-stat="items_complete"]').inner_text() == "0"

            # the annotator, in a separate browser context, judges everything with keys only
            bob = browser.new_context().new_page()
            bob.on("console", lambda m: m.type == "error" and problems.append(f"{m.text} at {m.location}"))
            _sign_in(bob, base, tokens["bob"])
            bob.get_by_role("link", name="helpfulness").click()
            kinds = _judge_with_keyboard(bob)
            assert sorted(kinds) == ["pair", "pair", "ranking", "ranking", "rating", "rating"]
            assert bob.locator(".done-count").inner_text() == "6 done"

            # the admin's page polls its progress fragment every 5 s
            admin.wait_for_selector('[data-stat="items_complete"]:text-is("6")', timeout=12_000)
            assert admin.locator('[data-done-by="bob"]').inner_text() == "6"

            admin.reload()  # the export links appear once there is something to export (not polled)
            with admin.expect_download() as info:
                admin.get_by_role("link", name="all files (.zip)").click()
            archive = tmp_path / "export.zip"
            info.value.save_as(archive)
        finally:
            browser.close()
    assert not problems, problems

    out = tmp_path / "export"
    zipfile.ZipFile(archive).extractall(out)
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    # bob preferred the left / first-scored response everywhere, so every pair has a winner
    assert {p["source"] for p in pairs} >= {"comparison", "ranking"}
    assert all(p["chosen"] != p["rejected"] and p["weight"] > 0 for p in pairs)

    from rlhfkit import RewardConfig, RewardTrainer
    from rlhfkit.testing import tiny_reward_model

    args = RewardConfig(output_dir=str(tmp_path / "rm"), max_steps=2, per_device_train_batch_size=2,
                        learning_rate=1e-3, logging_steps=1, report_to="none", disable_tqdm=True, max_length=64)
    model = tiny_reward_model("gpt2", tokenizer)
    before = model.score.weight.detach().clone()
    trainer = RewardTrainer(model=model, args=args, train_dataset=str(out / "pairs.jsonl"), processing_class=tokenizer)
    assert trainer.train_dataset.num_rows == len(pairs)  # every exported pair passed the data layer's checks
    history = trainer.train()
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert not trainer.model.score.weight.detach().equal(before)
