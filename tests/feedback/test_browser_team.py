"""The team features in a real browser (Chromium via Playwright): every team page and action, each page checked at
1280 px and 390 px wide for horizontal overflow (the page must not scroll sideways), with screenshots.

- annotator: a chat prompt as turns, Markdown with code, an XSS payload that must not run, a long answer
  whose Submit button stays on screen, "x of N", skip, discard with a reason, a comment, a ranking
  submitted in its shown order, "my judgements" with the texts;
- admin: the item browser and its filters, one item, the disagreement queue, the team page (invite link
  that a newcomer opens in another browser, settings, archive and restore), a generation job whose
  progress the page polls, and a wrong policy path.

Skipped without Chromium, as ``test_browser.py`` (``RLHFKIT_REQUIRE_BROWSER`` turns the skip into a failure).
"""

from __future__ import annotations

import re

import pytest

from rlhfkit.feedback import service
from rlhfkit.feedback.export import export_rows

from .test_browser import CHROMIUM, CHROMIUM_ARGS, _sign_in, server, sync_api  # noqa: F401 - fixtures

WIDTHS = (1280, 390)
LONG = "\n\n".join(f"Paragraph {i}: " + "a long answer that goes on " * 12 for i in range(40))
CODE = "```python\n" + "x = '" + "very_long_identifier_" * 20 + "'\nprint(x)\n```"
XSS = ("<script>window.pwned = 1</script> <img src=x onerror=\"window.pwned = 2\"> "
       "[click me](javascript:window.pwned=3) **bold**\n\n" + CODE)
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Explain `git rebase`."}]


def check_layout(page, shots, name: str) -> None:
    """At each width: no sideways scrolling of the page, and a screenshot (kept under the test's tmp dir)."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(50)
        scroll, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert scroll <= client, f"{name} at {width} px: the page is {scroll} px wide in a {client} px window"
        page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def in_viewport(page, locator) -> bool:
    box = locator.bounding_box()
    height = page.evaluate("window.innerHeight")
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


@pytest.fixture
def team_project(server):
    base, admin_token, app = server
    with app.state.sessions() as s:
        project = service.create_project(s, "team", per_item=2, gold_rate=0.0, instructions="Prefer *short* answers.")
        service.import_records(s, project, [
            {"prompt": CHAT, "responses": [XSS, LONG]},
            {"prompt": "Name three colours.", "responses": ["Red, green, blue.", "Colours.", "Blue."]},
        ], kinds=("pair", "ranking", "rating"))
        _, bob = service.add_annotator(s, "bob")
        _, cy = service.add_annotator(s, "cy")
    return base, admin_token, app, project.id, {"bob": bob, "cy": cy}


def test_the_annotator_pages_and_actions(sync_api, team_project, tmp_path):
    base, _admin_token, _app, pid, tokens = team_project
    shots = tmp_path / "shots"
    shots.mkdir()
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            _sign_in(page, base, tokens["bob"])
            check_layout(page, shots, "projects")
            assert page.locator("td[data-done]").inner_text() == "0 of 8"
            page.get_by_role("link", name="team").click()
            page.wait_for_selector("form.judge")
            assert page.locator(".of-total").inner_text().strip() == "· item 1 of 8"
            assert "short" in page.locator("details.panel em").inner_text()  # instructions as Markdown
            seen_chat = seen_long = False
            for step in range(8):
                form = page.locator("form.judge")
                kind = form.get_attribute("data-kind")
                text = form.inner_text()
                if form.locator(".prompt.chat").count():
                    seen_chat = True
                    assert form.locator(".turn").count() == 2 and form.locator(".turn code").inner_text() == "git rebase"
                    assert page.evaluate("window.pwned") is None  # nothing of the payload ran
                    assert form.locator("pre code.language-python").count() == 1 and "<script>" in text
                if "Paragraph 39" in text:
                    seen_long = True
                    check_layout(page, shots, f"queue-long-{kind}")
                    assert in_viewport(page, form.get_by_role("button", name=re.compile("^Submit")))
                if step == 0:  # skip
                    form.get_by_role("button", name="Skip").click()
                    page.wait_for_selector("text=Skipped: it goes to someone else.")
                    assert page.locator(".of-total").inner_text().strip() == "· item 1 of 7"
                    continue
                if step == 1:  # discard needs a reason: first refused, then accepted
                    form.locator("details.discard summary").click()
                    form.get_by_role("button", name="Discard item").click()
                    page.wait_for_selector("text=say why the item is discarded")
                    form = page.locator("form.judge")
                    form.locator("details.discard summary").click()
                    reason = form.get_by_label("Why can this item not be judged?")
                    reason.fill("the answers are cut off")
                    reason.press("Enter")  # Enter in the reason discards (not the form's first button, Submit)
                    page.wait_for_selector("text=Discarded: the admins will see your reason.")
                    continue
                if kind == "rating":
                    for block in form.locator(".response").all():
                        block.locator("label.choice").first.click()
                elif kind == "pair":
                    form.get_by_label("Left is better").check()
                    form.locator("details.comment summary").click()
                    form.locator("textarea[name=comment]").fill("left is clearer")
                else:  # ranking: submitted exactly as shown, no move
                    shown = [li.get_attribute("data-response") for li in form.locator(".ranking > li").all()]
                done = int(page.locator(".done-count").get_attribute("data-done"))
                form.get_by_role("button", name=re.compile("^Submit")).click()
                page.wait_for_selector(f'.done-count[data-done="{done + 1}"]')
                if kind == "ranking":
                    ranked_as_shown = shown
                if page.locator("text=Nothing left for you here").count():
                    break
            assert seen_chat and seen_long and page.locator("text=Nothing left for you here").count() == 1
            check_layout(page, shots, "queue-done")
            page.get_by_role("link", name="my judgements").click()
            page.wait_for_selector("h1:text('My judgements in team')")
            page.locator(".mine-row details summary").first.click()
            assert page.locator(".mine-row").count() == 6  # 8 items, one skipped, one discarded
            assert "Your comment: left is clearer" in page.locator("main").inner_text()
            check_layout(page, shots, "mine")
        finally:
            browser.close()
    assert not problems, problems
    with _app.state.sessions() as s:
        bob = service.get_annotator(s, "bob")
        rankings = [v for v in service.my_judgements(s, pid, bob) if v["kind"] == "ranking"]
        assert [int(x) for x in ranked_as_shown] in [v["judgement"]["order"] for v in rankings]


def test_the_admin_pages_and_actions(sync_api, team_project, tmp_path, tiny_dirs):
    base, admin_token, app, pid, tokens = team_project
    shots = tmp_path / "shots"
    shots.mkdir()
    with app.state.sessions() as s:  # two annotators who disagree on every comparison
        for name in ("bob", "cy"):
            who = service.get_annotator(s, name)
            while (a := service.next_assignment(s, pid, who)) is not None:
                ids = a.item.response_ids
                if a.item.kind == "pair":  # bob: the smaller id wins, cy: the larger
                    winner = "a" if name == "bob" else "b"
                    service.submit_comparison(s, who, a.id, winner, 2, comment=f"{name} thinks so")
                elif a.item.kind == "ranking":
                    service.submit_ranking(s, who, a.id, sorted(ids, reverse=name == "cy"))
                else:
                    service.submit_rating(s, who, a.id, {rid: (3 if name == "bob" else 1) for rid in ids})
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            _sign_in(admin, base, admin_token)
            check_layout(admin, shots, "admin-index")
            admin.goto(f"{base}/admin/projects/{pid}")
            admin.locator("#legend summary").click()
            assert "Dawid–Skene" in admin.locator("#legend").inner_text()
            with app.state.sessions() as s:
                expected = {f"{k}.jsonl" for k, rows in export_rows(service.collect(s, pid)).items() if rows}
            links = {href.rsplit("/", 1)[1] for href in
                     admin.locator('a[href*="/export/"]').evaluate_all("els => els.map(e => e.getAttribute('href'))")}
            assert expected and links == expected  # a link for each file an export writes, and no other
            check_layout(admin, shots, "admin-project")

            # item browser: filter by kind through the form, then open one item
            admin.get_by_role("link", name="Items", exact=True).click()
            admin.wait_for_selector("table.items")
            assert admin.locator("table.items tbody tr").count() == 8
            check_layout(admin, shots, "admin-items")
            admin.locator("form.filters select[name=kind]").select_option("pair")
            admin.locator("form.filters select[name=agreement]").select_option("disagree")
            admin.get_by_role("button", name="Filter").click()
            admin.wait_for_url("**kind=pair**")
            assert admin.locator("table.items tbody tr").count() == 4
            assert set(admin.locator("[data-agreement]").all_inner_texts()) == {"disagree"}
            admin.locator("table.items tbody tr a").first.click()
            admin.wait_for_selector("article.review")
            assert admin.locator("tr[data-annotator]").count() == 2
            assert "bob thinks so" in admin.locator("table.judgements").inner_text()
            check_layout(admin, shots, "admin-item")

            # the disagreement queue: texts and every judgement on one page
            admin.goto(f"{base}/admin/projects/{pid}")
            admin.get_by_role("link", name="Disagreements").click()
            admin.wait_for_selector("article.review")
            assert admin.locator("article.review").count() >= 4
            assert admin.locator("article.review").first.locator("tr[data-annotator]").count() == 2
            assert "Paragraph 39" in admin.locator("main").inner_text()  # the long response is there
            assert admin.evaluate("window.pwned") is None
            check_layout(admin, shots, "admin-disagreements")

            # team page: settings, an invite link a newcomer uses in another browser, archive and restore
            admin.goto(f"{base}/admin/projects/{pid}/team")
            settings = admin.locator("form", has_text="Save settings")
            settings.get_by_label("Members only").check()
            settings.get_by_role("button", name="Save settings").click()
            admin.wait_for_selector("text=Settings saved.")
            invite = admin.locator("form", has_text="Make an invite link")
            invite.locator("input[name=note]").fill("new people")
            invite.locator("input[name=max_uses]").fill("1")
            invite.get_by_role("button", name="Make an invite link").click()
            link = admin.locator("[data-invite-link]").inner_text().strip()
            check_layout(admin, shots, "admin-team")
            newcomer = browser.new_context(viewport={"width": 390, "height": 800}).new_page()
            newcomer.goto(link)
            newcomer.get_by_label("Your name").fill("dee")
            newcomer.get_by_role("button", name="Join the project").click()
            newcomer.wait_for_selector("[data-token]")
            check_layout(newcomer, shots, "joined")
            newcomer.get_by_role("link", name="Start judging").click()
            newcomer.wait_for_selector("text=Nothing left for you here")  # bob and cy covered every item twice
            check_layout(newcomer, shots, "newcomer-queue")
            newcomer.goto(link)
            assert "used up" in newcomer.locator("main").inner_text()
            admin.reload()
            assert admin.locator('[data-member="dee"]').count() == 1
            admin.get_by_role("button", name="Archive the project").click()
            admin.wait_for_selector("text=Archived: annotators no longer see this project.")
            newcomer.goto(f"{base}/projects")
            assert newcomer.locator("text=No projects for you yet").count() == 1
            admin.get_by_role("button", name="Restore the project").click()
            admin.wait_for_selector("text=Restored")

            # generation: a wrong path is refused in place; a real one runs as a job the page polls
            admin.goto(f"{base}/admin/projects/{pid}")
            gen = admin.locator("form", has_text="Generate responses with a policy")
            gen.get_by_label("Model folder").fill("runs/no-such-model")
            gen.get_by_label("Prompts, one per line").fill("Say something.")
            gen.get_by_role("button", name="Generate").click()
            admin.wait_for_selector(".notice.error")
            message = admin.locator(".notice.error").inner_text()
            assert "no such folder 'runs/no-such-model'" in message or "neither a local folder" in message
            assert "Repo id must be" not in message
            gen = admin.locator("form", has_text="Generate responses with a policy")
            gen.get_by_label("Model folder").fill(str(tiny_dirs["gpt2"]))
            gen.get_by_label("Prompts, one per line").fill("the cat\nthe dog")
            gen.get_by_label("Max new tokens").fill("4")
            gen.get_by_role("button", name="Generate").click()
            admin.wait_for_selector("text=Generation job")
            try:
                admin.wait_for_selector('[data-job-status="done"]', timeout=60_000)  # htmx polled it
            except sync_api.TimeoutError:
                raise AssertionError(admin.content()[-3000:]) from None
            assert "for 2 prompts" in admin.locator("[data-job-message]").first.inner_text()
            check_layout(admin, shots, "admin-job")
        finally:
            browser.close()
