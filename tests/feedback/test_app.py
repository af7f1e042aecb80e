"""The feedback web app through Starlette's TestClient: auth, CSRF, judging, ownership, admin, API, export."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from rlhfkit.feedback import service
from rlhfkit.feedback.app import create_app
from rlhfkit.feedback.app.auth import SESSION_COOKIE, Signer, resolve_secret

SECRET = "test-secret-for-the-feedback-app"
ROWS = [{"prompt": "Name a colour.", "responses": ["Blue.", "A colour is a colour.", "Red, like a rose."]},
        {"prompt": "Say hello.", "responses": ["Hello!", "Go away."]}]


@pytest.fixture
def env(tmp_path):
    """An app on a fresh SQLite file with an admin, two annotators and one project of all three kinds."""
    app = create_app(f"sqlite:///{tmp_path / 'feedback.db'}", secret=SECRET)
    with app.state.sessions() as s:
        _, admin = service.add_annotator(s, "ada", admin=True)
        _, bob = service.add_annotator(s, "bob")
        _, cy = service.add_annotator(s, "cy")
        project = service.create_project(s, "demo", scale=(1, 3), per_item=2, gold_rate=0.0)
        service.import_records(s, project, ROWS, kinds=("rating", "pair", "ranking"))
    return {"app": app, "tokens": {"ada": admin, "bob": bob, "cy": cy}, "project": project.id}


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def signed_in(env, name: str) -> tuple[TestClient, str]:
    """A client signed in as ``name`` and its current CSRF token."""
    client = TestClient(env["app"])
    page = client.get("/signin")
    response = client.post("/signin", data={"token": env["tokens"][name], "csrf_token": csrf_of(page.text)},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return client, csrf_of(client.get("/projects").text)


def current_form(html: str) -> dict:
    """The judging form on a page: its action, kind and the response ids in display order."""
    form = re.search(r'<form class="judge (\w+)" method="post" action="([^"]+)"', html)
    assert form, "no judging form on the page"
    kind, action = form.groups()
    field = {"rating": "score_", "pair": None, "ranking": "rank_"}[kind]
    ids = [int(x) for x in re.findall(r'data-response="(\d+)"', html)]
    return {"kind": kind, "action": action, "ids": ids, "field": field}


def answer(form: dict, csrf: str) -> dict:
    """A valid answer: the first shown response is best (score 3 / left / ranked first)."""
    data = {"csrf_token": csrf}
    if form["kind"] == "rating":
        data.update({f"score_{rid}": str(3 if i == 0 else 1) for i, rid in enumerate(form["ids"])})
    elif form["kind"] == "pair":
        data.update({"winner": "left", "strength": "2"})
    else:
        data.update({f"rank_{rid}": str(i + 1) for i, rid in enumerate(form["ids"])})
    return data


# ------------------------------------------------------------------------------------------- auth

def test_sign_in_sets_a_signed_httponly_lax_cookie_and_bad_tokens_are_refused(env):
    client = TestClient(env["app"])
    page = client.get("/signin")
    assert page.status_code == 200 and 'type="password" name="token"' in page.text
    wrong = client.post("/signin", data={"token": "not-a-token", "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    ok = client.post("/signin", data={"token": env["tokens"]["bob"], "csrf_token": csrf_of(wrong.text)},
                     follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/projects"
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith(SESSION_COOKIE + "=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert env["tokens"]["bob"] not in cookie  # the token itself never goes into the cookie
    assert "Signed in as <strong>bob</strong>" in client.get("/projects").text


def test_a_forged_or_tampered_cookie_is_not_a_session(env):
    client, _ = signed_in(env, "bob")
    value = client.cookies.get(SESSION_COOKIE)
    body, tag = value.split(".")
    forged = Signer(resolve_secret("some-other-secret-entirely")).sign({"aid": 1, "csrf": "x", "iat": 0, "th": None})
    for bad in (body + "." + tag[::-1], forged, "garbage"):
        other = TestClient(env["app"], cookies={SESSION_COOKIE: bad})
        response = other.get("/projects", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/signin")


def test_resetting_a_token_ends_that_persons_browser_sessions(env):
    client, _ = signed_in(env, "bob")
    with env["app"].state.sessions() as s:
        service.reset_token(s, "bob")
    assert client.get("/projects", follow_redirects=False).status_code == 303


def test_sign_in_redirects_only_to_local_paths(env):
    client = TestClient(env["app"])
    page = client.get("/signin?next=/p/1/mine")
    assert 'name="next" value="/p/1/mine"' in page.text
    for target, expected in (("/p/1/mine", "/p/1/mine"), ("//evil.example/x", "/projects"),
                             ("https://evil.example", "/projects")):
        response = client.post("/signin", data={"token": env["tokens"]["bob"], "next": target,
                                                "csrf_token": csrf_of(client.get("/signin").text)},
                               follow_redirects=False)
        assert response.headers["location"] == expected


def test_pages_redirect_to_sign_in_and_htmx_gets_hx_redirect(env):
    client = TestClient(env["app"])
    response = client.get(f"/p/{env['project']}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/signin?next=/p/{env['project']}"
    hx = client.get(f"/p/{env['project']}", headers={"HX-Request": "true"}, follow_redirects=False)
    assert hx.status_code == 401 and hx.headers["HX-Redirect"].startswith("/signin")


# ------------------------------------------------------------------------------------------- CSRF

def test_posts_without_the_right_csrf_token_are_rejected(env):
    anonymous = TestClient(env["app"])
    anonymous.get("/signin")
    assert anonymous.post("/signin", data={"token": env["tokens"]["bob"]}).status_code == 403
    client, csrf = signed_in(env, "bob")
    form = current_form(client.get(f"/p/{env['project']}").text)
    data = answer(form, csrf)
    for bad in ({k: v for k, v in data.items() if k != "csrf_token"}, {**data, "csrf_token": "wrong"}):
        response = client.post(form["action"], data=bad)
        assert response.status_code == 403 and "security token" in response.text
    # another browser's valid token does not work in this session
    _, other_csrf = signed_in(env, "cy")
    assert client.post(form["action"], data={**data, "csrf_token": other_csrf}).status_code == 403
    # the header (what htmx sends) works as well as the form field
    no_field = {k: v for k, v in data.items() if k != "csrf_token"}
    assert client.post(form["action"], data=no_field, headers={"X-CSRF-Token": csrf},
                       follow_redirects=False).status_code == 303


# ------------------------------------------------------------------------------------------- judging

def test_annotator_rates_compares_and_ranks_with_plain_form_posts(env):
    client, csrf = signed_in(env, "bob")
    seen = []
    for _ in range(20):
        page = client.get(f"/p/{env['project']}")
        if "Nothing left for you here" in page.text:
            break
        form = current_form(page.text)
        seen.append(form["kind"])
        response = client.post(form["action"], data=answer(form, csrf), follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == f"/p/{env['project']}"
    # 2 rating items (one per prompt), 3 + 1 pairs, 2 rankings
    assert sorted(seen) == ["pair"] * 4 + ["ranking"] * 2 + ["rating"] * 2
    assert f"{len(seen)} done" in client.get(f"/p/{env['project']}").text
    with env["app"].state.sessions() as s:
        data = service.collect(s, "demo")
    assert len(data.pairs) == 4 and len(data.rankings) == 2 and len(data.ratings) == 5
    assert all(p.left == (p.a if p.winner == "a" else p.b) for p in data.pairs)  # "left" was stored as left
    mine = client.get(f"/p/{env['project']}/mine")
    assert mine.text.count("Edit</a>") == len(seen) and "left better (clearly)" in mine.text


def test_htmx_submit_swaps_in_the_next_item(env):
    client, csrf = signed_in(env, "bob")
    form = current_form(client.get(f"/p/{env['project']}").text)
    response = client.post(form["action"], data=answer(form, csrf), headers={"HX-Request": "true",
                                                                             "X-CSRF-Token": csrf})
    assert response.status_code == 200
    assert "<html" not in response.text and "1 done" in response.text
    assert current_form(response.text)["action"] != form["action"]


def test_double_submit_is_409_and_a_bad_score_is_422_with_the_form_kept(env):
    client, csrf = signed_in(env, "bob")
    form = current_form(client.get(f"/p/{env['project']}").text)
    assert form["kind"] == "rating"
    bad = {**answer(form, csrf), f"score_{form['ids'][0]}": "7"}
    response = client.post(form["action"], data=bad)
    assert response.status_code == 422 and "outside the project&#39;s scale 1..3" in response.text
    assert current_form(response.text)["action"] == form["action"]  # same item, shown again
    missing = {k: v for k, v in answer(form, csrf).items() if k != f"score_{form['ids'][1]}"}
    assert client.post(form["action"], data=missing).status_code == 422
    assert client.post(form["action"], data=answer(form, csrf), follow_redirects=False).status_code == 303
    again = client.post(form["action"], data=answer(form, csrf))
    assert again.status_code == 409 and "already submitted" in again.text


def test_ranking_positions_must_be_a_permutation(env):
    client, csrf = signed_in(env, "bob")
    for _ in range(10):
        form = current_form(client.get(f"/p/{env['project']}").text)
        if form["kind"] == "ranking":
            break
        client.post(form["action"], data=answer(form, csrf))
    data = answer(form, csrf)
    data.update({f"rank_{rid}": "1" for rid in form["ids"]})
    response = client.post(form["action"], data=data)
    assert response.status_code == 422 and "different position" in response.text


def test_editing_an_own_judgement_changes_it(env):
    client, csrf = signed_in(env, "bob")
    form = current_form(client.get(f"/p/{env['project']}").text)
    client.post(form["action"], data=answer(form, csrf))
    edit = client.get(form["action"])  # the same URL, GET: the edit form, pre-filled
    assert edit.status_code == 200 and 'name="resubmit" value="1"' in edit.text and "checked" in edit.text
    changed = {**answer(form, csrf), f"score_{form['ids'][0]}": "2", "resubmit": "1"}
    response = client.post(form["action"], data=changed, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].endswith("/mine")
    with env["app"].state.sessions() as s:
        scores = {o.response_id: o.score for o in service.collect(s, "demo").ratings}
    assert scores[form["ids"][0]] == 2


def test_another_annotators_assignment_is_403_everywhere(env):
    bob, bob_csrf = signed_in(env, "bob")
    form = current_form(bob.get(f"/p/{env['project']}").text)
    bob.post(form["action"], data=answer(form, bob_csrf))
    cy, cy_csrf = signed_in(env, "cy")
    assert cy.get(form["action"]).status_code == 403  # cannot view (or edit) bob's item
    response = cy.post(form["action"], data={**answer(form, cy_csrf), "resubmit": "1"})
    assert response.status_code == 403 and "Blue." not in response.text
    assert cy.post("/p/1/a/9999", data=answer(form, cy_csrf)).status_code == 404
    api = cy.post(f"/api/assignments/{form['ids'] and form['action'].rsplit('/', 1)[1]}",
                  json={"scores": {str(rid): 1 for rid in form["ids"]}},
                  headers={"X-CSRF-Token": cy_csrf})
    assert api.status_code == 403 and api.json()["detail"]
    # cy's own list shows nothing of bob's work
    assert "Edit</a>" not in cy.get(f"/p/{env['project']}/mine").text


def test_annotators_never_see_gold_status(env):
    with env["app"].state.sessions() as s:
        project = service.create_project(s, "arith", per_item=1, gold_rate=0.9)
        service.import_records(s, project, [{"prompt": "2+2?", "chosen": "4", "rejected": "5", "gold_winner": "chosen"},
                                            {"prompt": "3+3?", "chosen": "6", "rejected": "7"}], kinds=("pair",))
        pid = project.id
    client, csrf = signed_in(env, "bob")
    prompts = []
    for _ in range(3):
        page = client.get(f"/p/{pid}")
        assert "gold" not in page.text.lower()
        if "Nothing left" in page.text:
            break
        prompts += re.findall(r"\d\+\d\?", page.text)
        form = current_form(page.text)
        client.post(form["action"], data=answer(form, csrf))
    assert sorted(prompts) == ["2+2?", "3+3?"]  # the gold item was served, looking like any other
    mine = client.get(f"/p/{pid}/mine")
    assert "gold" not in mine.text.replace("arith", "").lower()
    api = TestClient(env["app"]).get(f"/api/projects/{pid}/next",
                                     headers={"Authorization": f"Bearer {env['tokens']['cy']}"})
    assert api.status_code == 200 and "gold" not in api.text.lower() and "policy" not in api.text


# ------------------------------------------------------------------------------------------- admin

def test_admin_pages_are_403_for_annotators(env):
    client, csrf = signed_in(env, "bob")
    pid = env["project"]
    for path in ("/admin", f"/admin/projects/{pid}", f"/admin/projects/{pid}/progress",
                 f"/admin/projects/{pid}/export.zip", f"/admin/projects/{pid}/export/pairs.jsonl"):
        response = client.get(path)
        assert response.status_code == 403 and "admins only" in response.text, path
    assert client.post("/admin/projects", data={"name": "x", "csrf_token": csrf}).status_code == 403
    assert client.post("/admin/annotators", data={"name": "mallory", "csrf_token": csrf}).status_code == 403
    assert 'href="/admin"' not in client.get("/projects").text


def test_admin_creates_a_project_uploads_a_file_and_adds_an_annotator(env):
    client, csrf = signed_in(env, "ada")
    response = client.post("/admin/projects", data={"name": "helpfulness", "scale_min": "1", "scale_max": "5",
                                                    "per_item": "1", "gold_rate": "0", "csrf_token": csrf},
                           follow_redirects=False)
    assert response.status_code == 303
    page = client.get(response.headers["location"])
    assert "helpfulness" in page.text and 'hx-trigger="every 5s"' in page.text
    pid = int(response.headers["location"].rsplit("/", 1)[1])
    upload = "\n".join(json.dumps(r) for r in ROWS).encode()
    imported = client.post(f"/admin/projects/{pid}/import", data={"kinds": ["pair", "ranking"], "csrf_token": csrf},
                           files={"file": ("rows.jsonl", upload, "application/jsonl")})
    assert imported.status_code == 200, re.findall(r"notice[^>]*>([^<]*)", imported.text)
    assert "new items: 4 pair, 2 ranking" in imported.text
    bad = client.post(f"/admin/projects/{pid}/import", data={"kinds": ["pair"], "csrf_token": csrf},
                      files={"file": ("rows.jsonl", b'{"prompt": "x"}\n', "application/jsonl")})
    assert bad.status_code == 422 and "rows.jsonl line 1: needs" in bad.text
    added = client.post("/admin/annotators", data={"name": "dee", "csrf_token": csrf})
    token = re.search(r'<p class="token" data-token>([^<]+)</p>', added.text).group(1)
    assert added.status_code == 200 and added.headers["cache-control"] == "no-store"
    listing = client.get("/admin").text
    assert token not in listing  # shown once only
    assert re.search(r'helpfulness</a></td>\s*<td class="num">2</td><td class="num" data-items>6</td>', listing)
    dee = TestClient(env["app"])
    dee.post("/signin", data={"token": token, "csrf_token": csrf_of(dee.get("/signin").text)})
    assert current_form(dee.get(f"/p/{pid}").text)["kind"] in ("pair", "ranking")
    duplicate = client.post("/admin/annotators", data={"name": "dee", "csrf_token": csrf})
    assert duplicate.status_code == 409 and "already exists" in duplicate.text


def test_progress_fragment_and_export_download(env):
    for name in ("bob", "cy"):
        client, csrf = signed_in(env, name)
        for _ in range(20):
            page = client.get(f"/p/{env['project']}")
            if "Nothing left" in page.text:
                break
            form = current_form(page.text)
            client.post(form["action"], data=answer(form, csrf))
    admin, _ = signed_in(env, "ada")
    fragment = admin.get(f"/admin/projects/{env['project']}/progress")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert re.search(r'data-stat="items_complete">8<', fragment.text)
    assert 'data-done-by="bob">8<' in fragment.text and "Annotator quality" in fragment.text
    archive = admin.get(f"/admin/projects/{env['project']}/export.zip")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert set(names) == {"pairs.jsonl", "ratings.jsonl", "rankings.jsonl"}
    pairs = admin.get(f"/admin/projects/{env['project']}/export/pairs.jsonl")
    rows = [json.loads(line) for line in pairs.text.splitlines()]
    assert rows and {"prompt", "chosen", "rejected", "margin", "weight"} <= set(rows[0])
    assert admin.get(f"/admin/projects/{env['project']}/export/secrets.txt").status_code == 404


def test_export_of_an_empty_project_is_a_clear_409(env):
    admin, _ = signed_in(env, "ada")
    response = admin.get(f"/admin/projects/{env['project']}/export.zip")
    assert response.status_code == 409 and "nothing to export" in response.text


# ------------------------------------------------------------------------------------------- JSON API

def bearer(env, name):
    return {"Authorization": f"Bearer {env['tokens'][name]}"}


def test_api_with_a_bearer_token_needs_no_csrf(env):
    client = TestClient(env["app"])
    nxt = client.get("/api/projects/demo/next", headers=bearer(env, "bob")).json()
    job = nxt["assignment"]
    assert job["kind"] == "rating" and len(job["responses"]) == 3 and nxt["done"] == 0
    scores = {str(r["id"]): 2 for r in job["responses"]}
    ok = client.post(f"/api/assignments/{job['assignment_id']}", json={"scores": scores}, headers=bearer(env, "bob"))
    assert ok.status_code == 200 and ok.json()["status"] == "done"
    again = client.post(f"/api/assignments/{job['assignment_id']}", json={"scores": scores},
                        headers=bearer(env, "bob"))
    assert again.status_code == 409 and "already submitted" in again.json()["detail"]
    changed = client.post(f"/api/assignments/{job['assignment_id']}", json={"scores": scores, "resubmit": True},
                          headers=bearer(env, "bob"))
    assert changed.status_code == 200
    bad = client.post(f"/api/assignments/{job['assignment_id']}", json={"scores": {**scores, "1": 9},
                                                                        "resubmit": True},
                      headers=bearer(env, "bob"))
    assert bad.status_code == 422 and "scale" in bad.json()["detail"]
    theirs = client.post(f"/api/assignments/{job['assignment_id']}", json={"scores": scores},
                         headers=bearer(env, "cy"))
    assert theirs.status_code == 403


def test_api_errors_are_json_with_the_right_status(env):
    client = TestClient(env["app"])
    nobody = client.get("/api/projects/demo/next")
    assert nobody.status_code == 401 and nobody.headers["www-authenticate"] == "Bearer" and nobody.json()["detail"]
    wrong = client.get("/api/projects/demo/next", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client.get("/api/projects/nope/next", headers=bearer(env, "bob")).status_code == 404
    assert client.get("/api/projects/demo/progress", headers=bearer(env, "bob")).status_code == 403
    malformed = client.post("/api/assignments/1", content=b"[1, 2]", headers={**bearer(env, "bob"),
                                                                             "content-type": "application/json"})
    assert malformed.status_code == 422 and "detail" in malformed.json()


def test_api_with_the_session_cookie_needs_the_csrf_header(env):
    client, csrf = signed_in(env, "bob")
    job = client.get("/api/projects/demo/next").json()["assignment"]
    body = {"scores": {str(r["id"]): 1 for r in job["responses"]}}
    assert client.post(f"/api/assignments/{job['assignment_id']}", json=body).status_code == 403
    assert client.post(f"/api/assignments/{job['assignment_id']}", json=body,
                       headers={"X-CSRF-Token": csrf}).status_code == 200


def test_api_admin_adds_items_and_reads_their_judgements(env):
    client = TestClient(env["app"])
    created = client.post("/api/projects/demo/items", headers=bearer(env, "ada"),
                          json={"prompt": "Pick one.", "responses": ["yes", "no"], "kinds": ["pair"], "priority": 5})
    assert created.status_code == 201
    item_ids = created.json()["item_ids"]
    assert len(item_ids) == 1 and len(created.json()["response_ids"]) == 2
    job = client.get("/api/projects/demo/next", headers=bearer(env, "bob")).json()["assignment"]
    assert job["kind"] == "pair" and job["prompt"] == "Pick one."  # priority 5 is served first
    client.post(f"/api/assignments/{job['assignment_id']}", json={"winner": "right", "strength": 3},
                headers=bearer(env, "bob"))
    judged = client.get(f"/api/items/{item_ids[0]}/judgements", headers=bearer(env, "ada")).json()
    assert [j["annotator"] for j in judged["judgements"]] == ["bob"]
    assert judged["judgements"][0]["judgement"]["side"] == "right"
    assert client.get(f"/api/items/{item_ids[0]}/judgements", headers=bearer(env, "bob")).status_code == 403
    assert client.post("/api/projects/demo/items", headers=bearer(env, "bob"),
                       json={"prompt": "x", "responses": ["a", "b"]}).status_code == 403
    progress = client.get("/api/projects/demo/progress", headers=bearer(env, "ada")).json()
    assert progress["assignments"]["done"] == 1


# ------------------------------------------------------------------------------------------- plumbing

def test_security_headers_static_files_and_vendored_htmx(env):
    client, _ = signed_in(env, "bob")
    page = client.get(f"/p/{env['project']}")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline: the CSP holds
    assert "cdn" not in page.text.lower() and 'src="/static/htmx.min.js"' in page.text
    htmx = client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and htmx.text.startswith("/*! htmx 2.") and "Zero-Clause BSD" in htmx.text[:400]
    assert "set-cookie" not in htmx.headers
    assert 'hx-headers=\'{"X-CSRF-Token":' in page.text
    assert "<kbd>Enter</kbd>" in page.text and 'id="keys"' in page.text  # shortcuts documented on the page


def test_unknown_pages_are_clear_404s(env):
    client, _ = signed_in(env, "bob")
    response = client.get("/no/such/page")
    assert response.status_code == 404 and "Not Found" in response.text and "<html" in response.text
    assert client.get("/p/999").status_code == 404


def test_short_secrets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_app(f"sqlite:///{tmp_path / 'x.db'}", secret="short")


def test_sign_out_ends_the_session(env):
    client, csrf = signed_in(env, "bob")
    assert client.post("/signout", data={"csrf_token": csrf}, follow_redirects=False).headers["location"] == "/signin"
    assert client.get("/projects", follow_redirects=False).status_code == 303


def test_admin_deactivates_an_annotator_and_resets_a_token(env):
    admin, csrf = signed_in(env, "ada")
    bob, _ = signed_in(env, "bob")
    with env["app"].state.sessions() as s:
        bob_id, ada_id = service.get_annotator(s, "bob").id, service.get_annotator(s, "ada").id
    done = admin.post(f"/admin/annotators/{bob_id}/active", data={"active": "0", "csrf_token": csrf},
                      follow_redirects=False)
    assert done.status_code == 303
    assert bob.get("/projects", follow_redirects=False).status_code == 303  # signed out everywhere
    assert TestClient(env["app"]).get("/api/me", headers=bearer(env, "bob")).status_code == 401
    myself = admin.post(f"/admin/annotators/{ada_id}/active", data={"active": "0", "csrf_token": csrf})
    assert myself.status_code == 409
    fresh = admin.post(f"/admin/annotators/{bob_id}/token", data={"csrf_token": csrf})
    assert fresh.status_code == 200 and "Token for bob" in fresh.text


def test_admin_generates_responses_with_a_policy_folder(env, tiny_dirs):
    """Generation runs as a background job: the POST answers 202 at once, the jobs fragment shows
    progress until the job is done; a wrong policy path is a 422 naming it, before any job starts."""
    admin, csrf = signed_in(env, "ada")
    pid = env["project"]
    response = admin.post(f"/admin/projects/{pid}/generate",
                          data={"policy": str(tiny_dirs["gpt2"]), "prompts": "the cat\n\nthe dog\n", "n": "2",
                                "max_new_tokens": "4", "kinds": ["pair"], "csrf_token": csrf})
    assert response.status_code == 202 and "4 responses for 2 prompts" in response.text
    job = int(re.search(r"Generation job (\d+) started", response.text).group(1))
    deadline = time.time() + 60
    while 'data-job-status="done"' not in (jobs := admin.get(f"/admin/projects/{pid}/jobs").text):
        assert 'data-job-status="failed"' not in jobs, jobs
        assert time.time() < deadline, "the generation job did not finish within 60 s"
        time.sleep(0.2)
    assert f'data-job="{job}"' in jobs and "for 2 prompts" in jobs and "4 / 4" in jobs
    assert 'hx-trigger="every 2s"' not in jobs  # polling stops once no job runs
    with env["app"].state.sessions() as s:
        assert {p.text for p in service.get_project(s, pid).prompts} >= {"the cat", "the dog"}
    for policy, expected in [(str(tiny_dirs["gpt2"]) + "-missing", f"policy: no such folder '{tiny_dirs['gpt2']}-missing'"),
                             (str(tiny_dirs["gpt2"].parent), "is not a model folder (no config.json)"),
                             ("runs/sft model", "is neither a local folder nor a valid hub id")]:
        refused = admin.post(f"/admin/projects/{pid}/generate",
                             data={"policy": policy, "prompts": "x", "n": "1", "max_new_tokens": "2",
                                   "kinds": ["pair"], "csrf_token": csrf})
        assert refused.status_code == 422 and str(escape(expected)) in refused.text, policy
        assert "Repo id must be" not in refused.text
    assert admin.get(f"/admin/projects/{pid}/jobs").text.count("data-job=") == 1  # no job for a refused form


def test_texts_are_html_escaped(env):
    with env["app"].state.sessions() as s:
        project = service.create_project(s, "xss", per_item=1, gold_rate=0.0)
        service.import_records(s, project, [{"prompt": "<img src=x onerror=alert(1)>",
                                             "response": "<script>alert(2)</script>"}])
        pid = project.id
    client, _ = signed_in(env, "bob")
    page = client.get(f"/p/{pid}").text
    assert "<script>alert(2)" not in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "<img src=x" not in page
