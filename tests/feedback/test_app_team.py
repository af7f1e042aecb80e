"""Team features through the web app (TestClient): membership and invite links, the admin's item browser,
disagreement queue and team page, skip / discard / comment, "x of N", "my judgements" with texts,
safe Markdown, export links, and the sign-in hint naming the real command."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from rlhfkit.cli import main
from rlhfkit.feedback import service
from rlhfkit.feedback.app.markdown import render_markdown, safe_link

from .test_app import ROWS, answer, csrf_of, current_form, env, signed_in  # noqa: F401 - env is a fixture

XSS = ("<script>window.pwned = 1</script>\n\n<img src=x onerror=\"window.pwned = 2\">\n\n"
       "[click](javascript:window.pwned=3) [data](data:text/html;base64,PHNjcmlwdD4=) "
       "[tab](java&#x09;script:window.pwned=4) <a href=\"javascript:window.pwned=5\">raw</a>\n\n"
       "```python\nprint('<b>not bold</b>')\n```\n\n**bold** and [fine](https://example.org)")


class _Tags(HTMLParser):
    """Every start tag with its attributes, to check rendered HTML element by element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def assert_no_active_content(html: str) -> None:
    """No script element, no on* attribute, no href/src outside http(s)/mailto/relative, in any element."""
    for tag, attrs in tags_of(html):
        assert tag not in ("script", "iframe", "object", "embed") or attrs.get("src", "").startswith("/static/"), tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for key in ("href", "src", "action", "formaction"):
            if key in attrs:
                assert safe_link(attrs[key]), (tag, attrs)


# ------------------------------------------------------------------------------------------- markdown

def test_markdown_renders_code_and_links_and_never_raw_html():
    html = str(render_markdown(XSS))
    assert_no_active_content(html)
    assert '<pre><code class="language-python">' in html and "&lt;b&gt;not bold&lt;/b&gt;" in html
    assert "<strong>bold</strong>" in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow" target="_blank">fine</a>' in html
    assert "&lt;script&gt;" in html and "onerror" in html  # shown as text, not parsed as markup
    assert [t for t, _ in tags_of(html) if t == "a"] == ["a"]  # only the https link became a link
    assert str(render_markdown("line one\nline two")) == "<p>line one<br />\nline two</p>\n"
    for url, ok in (("https://x", True), ("mailto:a@b", True), ("/p/1", True), ("#top", True), ("rel/x", True),
                    ("javascript:x", False), ("JAVASCRIPT:x", False), ("data:text/html,x", False),
                    ("vbscript:x", False), (" javascript:x", False)):
        assert safe_link(url) is ok, url


def test_pages_render_untrusted_markdown_safely_and_chat_prompts_as_turns(env):
    with env["app"].state.sessions() as s:
        project = service.create_project(s, "md", per_item=1, gold_rate=0.0)
        service.import_records(s, project, [
            {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say **hi**."}],
             "responses": [XSS, "plain"]}], kinds=("pair",))
        pid = project.id
    client, csrf = signed_in(env, "bob")
    page = client.get(f"/p/{pid}").text
    assert_no_active_content(page.split("<main", 1)[1])
    assert page.count('class="turn role-') == 2 and "<strong>hi</strong>" in page
    assert '<div class="role">system</div>' in page and '<div class="role">user</div>' in page
    form = current_form(page)
    client.post(form["action"], data=answer(form, csrf))
    mine = client.get(f"/p/{pid}/mine").text
    assert_no_active_content(mine.split("<main", 1)[1])
    assert '<pre><code class="language-python">' in mine and "<strong>hi</strong>" in mine
    admin, _ = signed_in(env, "ada")
    items = admin.get(f"/admin/projects/{pid}/items").text
    item_id = re.search(r'data-item="(\d+)"', items).group(1)
    detail = admin.get(f"/admin/projects/{pid}/items/{item_id}").text
    assert_no_active_content(detail.split("<main", 1)[1])
    assert "<strong>hi</strong>" in detail and "Response A" in detail and "Response B" in detail


# ------------------------------------------------------------------------------------------- membership

def test_sign_in_names_the_real_cli_command(env, tmp_path, capsys):
    page = TestClient(env["app"]).get("/signin").text
    assert "rlhfkit feedback annotator add NAME" in page and "add-annotator" not in page
    # the command works as the page writes it
    assert main(["feedback", "annotator", "add", "dee", "--db", str(tmp_path / "cli.db")]) == 0
    assert "added annotator 'dee'" in capsys.readouterr().out


def test_members_only_projects_and_invite_links_in_the_browser(env):
    pid = env["project"]
    admin, csrf = signed_in(env, "ada")
    saved = admin.post(f"/admin/projects/{pid}/settings",
                       data={"name": "demo", "per_item": "2", "gold_rate": "0", "timeout_minutes": "30",
                             "instructions": "Judge **carefully**.", "members_only": "1", "csrf_token": csrf})
    assert saved.status_code == 200 and "Settings saved." in saved.text
    bob, _ = signed_in(env, "bob")
    assert "demo" not in bob.get("/projects").text.split("<main", 1)[1]
    refused = bob.get(f"/p/{pid}")
    assert refused.status_code == 403 and "ask an admin for an invite link" in refused.text
    assert bob.get(f"/p/{pid}/mine").status_code == 403
    made = admin.post(f"/admin/projects/{pid}/invites", data={"note": "for bob", "max_uses": "2", "days": "7",
                                                              "csrf_token": csrf})
    link = re.search(r"data-invite-link>([^<]+)<", made.text).group(1)
    code = link.rsplit("/join/", 1)[1]
    assert code not in admin.get(f"/admin/projects/{pid}/team").text  # shown once only
    # a signed-in annotator joins with one click
    page = bob.get(f"/join/{code}")
    assert page.status_code == 200 and "signed in as <strong>bob</strong>" in page.text
    joined = bob.post(f"/join/{code}", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert joined.status_code == 303 and joined.headers["location"] == f"/p/{pid}"
    assert "Judge <strong>carefully</strong>." in bob.get(f"/p/{pid}").text  # instructions render as Markdown
    # a newcomer gets an account, is signed in and sees the token once
    newcomer = TestClient(env["app"])
    form = newcomer.get(f"/join/{code}")
    taken = newcomer.post(f"/join/{code}", data={"name": "bob", "csrf_token": csrf_of(form.text)})
    assert taken.status_code == 409 and "already exists" in taken.text
    welcome = newcomer.post(f"/join/{code}", data={"name": "dee", "csrf_token": csrf_of(taken.text)})
    token = re.search(r"data-token>([^<]+)<", welcome.text).group(1)
    assert welcome.status_code == 200 and "Welcome, dee" in welcome.text
    assert newcomer.get(f"/p/{pid}").status_code == 200
    with env["app"].state.sessions() as s:
        assert service.authenticate(s, token).name == "dee"
        assert [m.name for m in service.members(s, pid)] == ["bob", "dee"]
    used = TestClient(env["app"]).get(f"/join/{code}")
    assert used.status_code == 410 and "used up" in used.text
    assert TestClient(env["app"]).get("/join/not-a-code-at-all").status_code == 404
    team = admin.get(f"/admin/projects/{pid}/team").text
    assert 'data-member="bob"' in team and 'data-member="dee"' in team and "used up" in team
    bob_id = re.search(r'/members/(\d+)/remove"', team).group(1)
    admin.post(f"/admin/projects/{pid}/members/{bob_id}/remove", data={"csrf_token": csrf})
    assert bob.get(f"/p/{pid}").status_code == 403


def test_archiving_hides_the_project_and_admin_pages_are_for_admins_only(env):
    pid = env["project"]
    admin, csrf = signed_in(env, "ada")
    bob, bob_csrf = signed_in(env, "bob")
    for path in ("items", "disagreements", "team", "jobs", "items/1"):
        assert bob.get(f"/admin/projects/{pid}/{path}").status_code == 403, path
    assert bob.post(f"/admin/projects/{pid}/archive", data={"archived": "1", "csrf_token": bob_csrf}).status_code == 403
    archived = admin.post(f"/admin/projects/{pid}/archive", data={"archived": "1", "csrf_token": csrf})
    assert "Archived" in archived.text
    assert "demo" not in bob.get("/projects").text.split("<main", 1)[1]
    assert bob.get(f"/p/{pid}").status_code == 409
    assert "data-archived" in admin.get("/admin").text
    admin.post(f"/admin/projects/{pid}/archive", data={"archived": "0", "csrf_token": csrf})
    assert bob.get(f"/p/{pid}").status_code == 200


# ------------------------------------------------------------------------------------------- annotator side

def test_skip_discard_comment_and_x_of_n_in_the_queue(env):
    pid = env["project"]
    bob, csrf = signed_in(env, "bob")
    page = bob.get(f"/p/{pid}").text
    total = int(re.search(r'data-total="(\d+)"', page).group(1))
    assert total == 8 and "item 1 of 8" in page  # ROWS: 2 rating, 3 + 1 pair, 2 ranking items
    first = current_form(page)
    skip_url = first["action"] + "/skip"
    assert f'formaction="{skip_url}"' in page and "formnovalidate" in page
    skipped = bob.post(skip_url, data={"kind": "skip", "csrf_token": csrf}, headers={"HX-Request": "true"})
    assert skipped.status_code == 200 and "Skipped" in skipped.text and "item 1 of 7" in skipped.text
    second = current_form(skipped.text)
    no_reason = bob.post(second["action"] + "/skip", data={"kind": "discard", "reason": " ", "csrf_token": csrf},
                         headers={"HX-Request": "true"})
    assert no_reason.status_code == 422 and "say why" in no_reason.text
    assert current_form(no_reason.text)["action"] == second["action"]  # the same item, with the message
    bob.post(second["action"] + "/skip", data={"kind": "discard", "reason": "cut off", "csrf_token": csrf})
    third = current_form(bob.get(f"/p/{pid}").text)
    done = bob.post(third["action"], data={**answer(third, csrf), "comment": "close call"},
                    headers={"HX-Request": "true"})
    assert "1 done" in done.text and "item 2 of 6" in done.text
    assert bob.post(third["action"] + "/skip", data={"kind": "skip", "csrf_token": csrf}).status_code == 409
    mine = bob.get(f"/p/{pid}/mine").text
    assert "Your comment:</strong> close call" in mine and "Show the prompt and the responses" in mine
    with env["app"].state.sessions() as s:
        assert service.assignment_view(s, service.get_annotator(s, "bob"),
                                       int(third["action"].rsplit("/", 1)[1]))["comment"] == "close call"
    admin, _ = signed_in(env, "ada")
    discarded = admin.get(f"/admin/projects/{pid}/items?status=discarded").text
    assert discarded.count('<tr data-item="') == 1
    item_id = re.search(r'<tr data-item="(\d+)"', discarded).group(1)
    detail = admin.get(f"/admin/projects/{pid}/items/{item_id}").text
    assert 'data-skip="discard"' in detail and "cut off" in detail


def test_a_ranking_submits_in_its_shown_order_without_touching_it(env):
    with env["app"].state.sessions() as s:
        project = service.create_project(s, "rank", per_item=1, gold_rate=0.0)
        service.import_records(s, project, ROWS[:1], kinds=("ranking",))
        pid = project.id
    bob, csrf = signed_in(env, "bob")
    page = bob.get(f"/p/{pid}").text
    form = current_form(page)
    values = dict(re.findall(r'name="(rank_\d+)"[^>]*\n?\s*value="(\d+)"', page))
    assert [values[f"rank_{rid}"] for rid in form["ids"]] == ["1", "2", "3"]
    submitted = bob.post(form["action"], data={"csrf_token": csrf, **values}, follow_redirects=False)
    assert submitted.status_code == 303
    with env["app"].state.sessions() as s:
        view = service.my_judgements(s, pid, service.get_annotator(s, "bob"))[0]
        assert view["judgement"]["order"] == form["ids"]


# ------------------------------------------------------------------------------------------- admin review

def _judge_all(env, name: str, first_wins: bool) -> None:
    client, csrf = signed_in(env, name)
    while 'class="judge' in (page := client.get(f"/p/{env['project']}").text):
        form = current_form(page)
        data = answer(form, csrf)
        if not first_wins and form["kind"] == "pair":
            data["winner"] = "right"
        if not first_wins and form["kind"] == "ranking":
            data.update({f"rank_{rid}": str(len(form["ids"]) - i) for i, rid in enumerate(form["ids"])})
        if not first_wins and form["kind"] == "rating":
            data.update({f"score_{rid}": str(1 if i == 0 else 3) for i, rid in enumerate(form["ids"])})
        assert client.post(form["action"], data=data, follow_redirects=False).status_code == 303


def test_item_browser_filters_and_the_disagreement_queue_shows_texts_and_judgements(env):
    pid = env["project"]
    admin, csrf = signed_in(env, "ada")
    project_page = admin.get(f"/admin/projects/{pid}").text
    assert "data-no-export" in project_page and "export.zip" not in project_page  # nothing to export yet
    assert "Krippendorff" in project_page and "Dawid–Skene" in project_page and "position bias" in project_page
    _judge_all(env, "bob", first_wins=True)
    _judge_all(env, "cy", first_wins=False)
    listing = admin.get(f"/admin/projects/{pid}/items").text
    assert listing.count('<tr data-item="') == 8 and "8 items" in listing
    assert admin.get(f"/admin/projects/{pid}/items?kind=ranking").text.count('<tr data-item="') == 2
    assert admin.get(f"/admin/projects/{pid}/items?annotator=cy&status=complete").text.count('<tr data-item="') == 8
    assert admin.get(f"/admin/projects/{pid}/items?gold=yes").text.count('<tr data-item="') == 0
    assert admin.get(f"/admin/projects/{pid}/items?status=waiting").text.count('<tr data-item="') == 0
    bad = admin.get(f"/admin/projects/{pid}/items?agreement=maybe")
    assert bad.status_code == 422 and "agreement must be one of" in bad.text
    split = admin.get(f"/admin/projects/{pid}/items?agreement=disagree").text
    agree = admin.get(f"/admin/projects/{pid}/items?agreement=agree").text
    n_split, n_agree = split.count('<tr data-item="'), agree.count('<tr data-item="')
    assert n_split + n_agree == 8 and n_split >= 1
    queue = admin.get(f"/admin/projects/{pid}/disagreements").text
    assert queue.count('<article class="card review"') == n_split
    assert queue.count('data-annotator="bob"') == n_split and queue.count('data-annotator="cy"') == n_split
    split_ids = re.findall(r'<tr data-item="(\d+)"', split)
    assert re.findall(r'<article class="card review" data-item="(\d+)"', queue) == split_ids
    with env["app"].state.sessions() as s:
        for item_id in split_ids:  # each with its prompt, every response text and both answers
            review = service.item_review(s, int(item_id))
            article = queue.split(f'data-item="{item_id}"', 1)[1].split("</article>", 1)[0]
            assert review["prompt"] in article
            assert all(f"<p>{r['text']}</p>" in article for r in review["responses"])
            assert all(str(escape(j["answer"])) in article for j in review["judgements"])
    # export links now, only for files with rows, and the numbers rounded
    project_page = admin.get(f"/admin/projects/{pid}").text
    names = re.findall(r'/export/([a-z]+\.jsonl)"', project_page)
    assert names and set(names) <= {"pairs.jsonl", "ratings.jsonl", "rankings.jsonl"}
    for name in names:
        body = admin.get(f"/admin/projects/{pid}/export/{name}").text
        for number in re.findall(r'": (-?\d+\.\d+)', body):
            assert len(number.lstrip("-").replace(".", "").lstrip("0")) <= 6, number  # 6 significant digits
    assert "comparison agreement (κ)" in project_page or "comparisons" in project_page
    assert "pair agree" not in project_page


def test_the_json_api_reports_x_of_n_chat_turns_skips_and_comments(env):
    with env["app"].state.sessions() as s:
        project = service.create_project(s, "api", per_item=1, gold_rate=0.0)
        service.import_records(s, project, [
            {"prompt": [{"role": "user", "content": "Hi?"}], "responses": ["Hello.", "Hey."]},
            {"prompt": "Bye?", "responses": ["Bye.", "Later."]}], kinds=("pair",))
    api = TestClient(env["app"], headers={"Authorization": f"Bearer {env['tokens']['bob']}"})
    first = api.get("/api/projects/api/next").json()
    assert first["position"] == {"done": 0, "total": 2}
    assert first["assignment"]["messages"] == [{"role": "user", "content": "Hi?"}]
    aid = first["assignment"]["assignment_id"]
    assert api.post(f"/api/assignments/{aid}/skip", json={"kind": "discard"}).status_code == 422  # no reason
    assert api.post(f"/api/assignments/{aid}/skip", json={"kind": "nope"}).status_code == 422
    assert api.post(f"/api/assignments/{aid}/skip", json={"kind": "discard", "reason": "odd"}).json()["kind"] == \
        "discard"
    second = api.get("/api/projects/api/next").json()
    assert second["position"] == {"done": 0, "total": 1} and "messages" not in second["assignment"]
    aid = second["assignment"]["assignment_id"]
    assert api.post(f"/api/assignments/{aid}", json={"winner": "tie", "comment": "same"}).status_code == 200
    assert api.post(f"/api/assignments/{aid}/skip", json={}).status_code == 409  # submitted: edit instead
    assert api.get("/api/projects/api/next").json() == {"assignment": None, "done": 1,
                                                        "position": {"done": 1, "total": 1}}
    with env["app"].state.sessions() as s:
        item_id = service.assignment_view(s, service.get_annotator(s, "bob"), aid)["item_id"]
    judged = TestClient(env["app"], headers={"Authorization": f"Bearer {env['tokens']['ada']}"}) \
        .get(f"/api/items/{item_id}/judgements").json()
    assert [j["comment"] for j in judged["judgements"]] == ["same"]
