"""``rlhfkit feedback ...`` end to end through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.cli import main
from rlhfkit.feedback import db
from rlhfkit.feedback import service as sv


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(capsys, *argv) -> str:
    assert main(["feedback", *argv]) == 0
    return capsys.readouterr().out


def _token(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_init_project_annotators_import_progress(url, tmp_path, capsys):
    assert "schema revision 0003" in run(capsys, "init", "--db", url)
    out = run(capsys, "project", "create", "helpful", "--scale", "1", "5", "--per-item", "1", "--gold-rate", "0",
              "--db", url)
    assert "scale 1..5" in out
    with pytest.raises(SystemExit, match="error: project 'helpful' already exists"):
        main(["feedback", "project", "create", "helpful", "--db", url])
    with pytest.raises(SystemExit, match="error: --scale: scale must satisfy"):
        main(["feedback", "project", "create", "other", "--scale", "3", "1", "--db", url])
    admin_token = _token(run(capsys, "annotator", "add", "ada", "--admin", "--db", url))
    bob_token = _token(run(capsys, "annotator", "add", "bob", "--db", url))
    assert "helpful" in run(capsys, "project", "list", "--db", url)
    listing = run(capsys, "annotator", "list", "--db", url)
    assert "ada\tadmin\tactive" in listing and "bob\tannotator\tactive" in listing
    assert admin_token not in listing

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                                      {"prompt": "q", "responses": ["c", "d", "e"]}]) + "\n")
    out = run(capsys, "import", "--project", "helpful", str(rows), "--kind", "rating", "pair", "--db", url)
    assert "2 row(s): 2 new prompt(s), 5 new response(s), items created: 2 rating, 4 pair" in out
    assert "6 already existed" in run(capsys, "import", "--project", "helpful", str(rows), "--kind", "rating", "pair",
                                      "--db", url)
    with pytest.raises(SystemExit, match=r"error: .*bad.jsonl line 1: needs 'response'"):
        (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "text": "x"}\n')
        main(["feedback", "import", "--project", "helpful", str(tmp_path / "bad.jsonl"), "--db", url])
    progress = json.loads(run(capsys, "progress", "--project", "helpful", "--db", url))
    assert progress["items"] == 6 and progress["items_by_kind"] == {"rating": 2, "pair": 4, "ranking": 0}

    Session = db.connect(url)
    with Session() as s:
        assert sv.authenticate(s, admin_token).is_admin and not sv.authenticate(s, bob_token).is_admin
    new_token = _token(run(capsys, "annotator", "reset-token", "bob", "--db", url))
    assert "deactivated" in run(capsys, "annotator", "deactivate", "bob", "--db", url)
    with Session() as s:
        assert sv.authenticate(s, bob_token) is None and sv.authenticate(s, new_token) is None
    run(capsys, "annotator", "activate", "bob", "--db", url)
    with Session() as s:
        assert sv.authenticate(s, new_token).name == "bob"
    db.engine_of(Session).dispose()
    with pytest.raises(SystemExit, match="error: project 'nope' not found"):
        main(["feedback", "progress", "--project", "nope", "--db", url])


def test_default_database_comes_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(db.ENV_VAR, str(tmp_path / "env.db"))
    run(capsys, "project", "create", "from-env")
    assert (tmp_path / "env.db").exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(db.ENV_VAR)
    run(capsys, "project", "create", "from-default")
    assert (tmp_path / "feedback.db").exists()


def test_generate_report_and_export(url, tmp_path, capsys):
    from rlhfkit.data import load_records
    from rlhfkit.testing import save_tiny

    policy = save_tiny(tmp_path / "policy")
    (tmp_path / "prompts.txt").write_text("the band 1 \n\nthe band 2 \n")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "the moon "}) + "\n")
    run(capsys, "project", "create", "gen", "--per-item", "2", "--gold-rate", "0", "--db", url)
    out = run(capsys, "generate", "--project", "gen", "--policy", str(policy), "--prompts", str(tmp_path / "prompts.txt"),
              "--n", "2", "--max-new-tokens", "5", "--kind", "pair", "--db", url)
    assert "for 2 prompt(s)" in out
    run(capsys, "generate", "--project", "gen", "--policy", str(policy), "--prompts", str(tmp_path / "prompts.jsonl"),
        "--kind", "pair", "--max-new-tokens", "5", "--db", url)
    with pytest.raises(SystemExit, match="no 'prompt' column"):
        (tmp_path / "noprompt.jsonl").write_text('{"text": "x"}\n')
        main(["feedback", "generate", "--project", "gen", "--policy", str(policy), "--prompts",
              str(tmp_path / "noprompt.jsonl"), "--db", url])

    Session = db.connect(url)
    with Session() as s:
        people = [sv.add_annotator(s, name)[0] for name in ("ann", "ben")]
        for who in people:
            while (a := sv.next_assignment(s, "gen", who)) is not None:
                sv.submit_comparison(s, who, a.id, "a", 2)  # both always prefer the smaller id: full agreement
        n_pairs = len(sv.collect(s, "gen").pairs)
    db.engine_of(Session).dispose()
    assert n_pairs >= 4

    report = run(capsys, "report", "--project", "gen", "--out", str(tmp_path / "r" / "report.md"), "--db", url)
    assert report.startswith("# Feedback quality: gen") and "ann" in report and "ben" in report
    assert (tmp_path / "r" / "report.md").read_text() + "\n" == report
    out = run(capsys, "export", "--project", "gen", "--out", str(tmp_path / "export"), "--db", url)
    assert "pairs:" in out
    pairs = load_records(str(tmp_path / "export" / "pairs.jsonl"))
    assert len(pairs) == n_pairs // 2 and {"prompt", "chosen", "rejected", "margin", "weight"} <= set(pairs.column_names)
    run(capsys, "project", "create", "empty", "--db", url)
    with pytest.raises(SystemExit, match="error: nothing to export"):
        main(["feedback", "export", "--project", "empty", "--out", str(tmp_path / "e"), "--db", url])


def test_serve_runs_the_app_with_uvicorn(url, monkeypatch):
    import uvicorn
    from fastapi import FastAPI

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    with pytest.raises(SystemExit, match="error: the session secret must be at least 16"):
        main(["feedback", "serve", "--db", url, "--secret", "short"])
    assert not calls
    assert main(["feedback", "serve", "--db", url, "--host", "0.0.0.0", "--port", "8123", "--secret", "s" * 32]) == 0
    assert isinstance(calls["app"], FastAPI) and calls["host"] == "0.0.0.0" and calls["port"] == 8123
    engine = db.engine_of(calls["app"].state.sessions)
    assert str(engine.url) == url and db.current_revision(engine) == "0003"  # migrated on start
    engine.dispose()


def test_first_serve_creates_an_admin_and_prints_its_token_once(url, monkeypatch, capsys):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    main(["feedback", "serve", "--db", url, "--secret", "s" * 32])
    out = capsys.readouterr().out
    token = out.split("shown once")[1].split()[-1]
    factory = db.connect(url)
    with factory() as s:
        admin = sv.authenticate(s, token)
        assert admin is not None and admin.is_admin and admin.name == "admin"
    db.engine_of(factory).dispose()
    main(["feedback", "serve", "--db", url, "--secret", "s" * 32])  # an admin exists now: no new one, no token
    assert "No admin yet" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------- bad input

def refused(capsys, *argv) -> str:
    """The command exits with status 2 after printing exactly one line ``error: ...``; returns it."""
    with pytest.raises(SystemExit) as exc:
        main(["feedback", *argv])
    assert exc.value.code == 2, (argv, exc.value.code)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)
    assert str(exc.value) == lines[0] and "Traceback" not in captured.out
    return lines[0]


def test_a_db_that_is_not_a_feedback_database_is_one_clear_line(tmp_path, capsys):
    import sqlite3

    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 200)
    assert f"database {text} is not a SQLite database" in refused(capsys, "project", "list", "--db", str(text))
    assert text.read_text() == "not a database\n" * 200  # untouched
    assert f"cannot open database {tmp_path}" in refused(capsys, "init", "--db", str(tmp_path))
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    assert "already holds tables of something else (invoices)" in refused(capsys, "init", "--db", str(other))
    assert "cannot use database" in refused(capsys, "project", "list", "--db", "nosuchdriver://x/y")


def test_every_subcommand_refuses_bad_arguments_with_status_2_and_writes_nothing(tmp_path, capsys):
    new = tmp_path / "new.db"
    db_args = ("--db", str(new))
    (tmp_path / "prompts.txt").write_text("hello\n")
    prompts = str(tmp_path / "prompts.txt")
    (tmp_path / "rows.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    rows = str(tmp_path / "rows.jsonl")
    cases = [
        (("project", "create", "bad/name"), "project name"),
        (("project", "create", "ok", "--per-item", "0"), "per_item must be between 1"),
        (("project", "create", "ok", "--scale", "1", "1"), "scale must satisfy"),
        (("project", "create", "ok", "--timeout-minutes", "0"), "timeout_minutes must be between 1"),
        (("project", "create", "ok", "--gold-rate", "1.5"), "gold_rate"),
        (("annotator", "add", " "), "annotator name"),
        (("annotator", "deactivate", "nobody"), "annotator 'nobody' not found"),
        (("annotator", "activate", "nobody"), "annotator 'nobody' not found"),
        (("annotator", "reset-token", "nobody"), "annotator 'nobody' not found"),
        (("import", "--project", "nope", prompts), "unknown file extension '.txt'"),
        (("import", "--project", "nope", rows), "project 'nope' not found"),
        (("generate", "--project", "nope", "--policy", str(tmp_path / "no-model"), "--prompts", prompts),
         f"policy: no such folder '{tmp_path / 'no-model'}'"),
        (("generate", "--project", "nope", "--policy", "x", "--prompts", str(tmp_path / "none.txt")), "--prompts: no such file"),
        (("progress", "--project", "nope"), "project 'nope' not found"),
        (("report", "--project", "nope"), "project 'nope' not found"),
        (("export", "--project", "nope", "--out", str(tmp_path / "out")), "project 'nope' not found"),
        (("prioritise", "--project", "nope", "--reward-model", str(tmp_path / "no-rm")),
         f"reward model: no such folder '{tmp_path / 'no-rm'}'"),
        (("serve", "--port", "70000"), "--port must be 0..65535"),
        (("serve", "--secret", "short"), "at least 16 characters"),
    ]
    for argv, expected in cases:
        assert expected in refused(capsys, *argv, *db_args), argv
        assert not new.exists() and not (tmp_path / "out").exists(), argv  # a failed command leaves no file
    with pytest.raises(SystemExit) as exc:  # argparse's own refusals use the same status
        main(["feedback", "project", "create", "--scale", "one", "3", *db_args])
    assert exc.value.code == 2


def test_import_names_the_file_and_line_of_bad_input(url, tmp_path, capsys):
    run(capsys, "project", "create", "files", "--db", url)
    pairs = tmp_path / "pairs.jsonl"
    lines = [json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) for i in range(1, 61)]
    lines[56] = lines[56][:-1]  # line 57: the closing brace is missing
    pairs.write_text("\n".join(lines) + "\n")
    assert f"{pairs} line 57 (row 56): malformed JSON" in refused(capsys, "import", "--project", "files", str(pairs),
                                                                  "--kind", "pair", "--db", url)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"prompt": "p", "response": "fine"}\n{"prompt": "q", "response": "  \\t "}\n')
    assert f"{empty} line 2: field 'response' holds an empty response" in refused(
        capsys, "import", "--project", "files", str(empty), "--db", url)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"prompt,response\nhello,fine\ncaf\xe9,ok\n")
    line = refused(capsys, "import", "--project", "files", str(latin), "--db", url)
    assert f"{latin} line 3: " in line and "not UTF-8" in line
    (tmp_path / "latin1.txt").write_bytes(b"fine\n\xff\xfe\n")
    assert "latin1.txt line 2: not UTF-8 text" in refused(
        capsys, "generate", "--project", "files", "--policy", "x", "--prompts", str(tmp_path / "latin1.txt"),
        "--db", url)
    assert json.loads(run(capsys, "progress", "--project", "files", "--db", url))["items"] == 0  # nothing imported


def test_team_commands_edit_archive_members_and_invites(url, capsys):
    run(capsys, "project", "create", "team", "--db", url)
    assert "members only" in run(capsys, "project", "edit", "team", "--members-only", "yes", "--per-item", "3",
                                 "--db", url)
    run(capsys, "annotator", "add", "bob", "--db", url)
    assert "is now a member of" in run(capsys, "member", "add", "--project", "team", "bob", "--db", url)
    assert "was already a member" in run(capsys, "member", "add", "--project", "team", "bob", "--db", url)
    assert run(capsys, "member", "list", "--project", "team", "--db", url).split() == ["bob"]
    out = run(capsys, "invite", "create", "--project", "team", "--max-uses", "2", "--note", "interns", "--db", url)
    code = out.strip().splitlines()[-1].removeprefix("/join/")
    listing = run(capsys, "invite", "list", "--project", "team", "--db", url)
    assert "active" in listing and "used 0/2" in listing and "interns" in listing and code not in listing
    Session = db.connect(url)
    with Session() as s:
        _, token, project = sv.redeem_invite(s, code, name="dee")
        assert project.name == "team" and token
        assert sv.get_project(s, "team").per_item == 3
    db.engine_of(Session).dispose()
    assert "revoked" in run(capsys, "invite", "revoke", "--project", "team", "1", "--db", url)
    assert "revoked" in run(capsys, "invite", "list", "--project", "team", "--db", url)
    assert "archived" in run(capsys, "project", "archive", "team", "--db", url)
    assert "restored" in run(capsys, "project", "restore", "team", "--db", url)
    assert "no longer a member" in run(capsys, "member", "remove", "--project", "team", "bob", "--db", url)
    assert "per_item must be between 1" in refused(capsys, "project", "edit", "team", "--per-item", "0", "--db", url)
    assert "an invite works for 1 to 365 days" in refused(capsys, "invite", "create", "--project", "team",
                                                            "--days", "999", "--db", url)


# ------------------------------------------------------------------------------ options: spellings, --config, overrides
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SAMPLE = {"int": "3", "float": "0.5", "str": "x", "bool": "true", "list": "pair"}  # a non-default value of each kind


def parsed(*argv):
    from rlhfkit.cli import build_parser
    from rlhfkit.feedback.cli import parse

    return parse(build_parser()[0], ["feedback", *argv])


def leaves():
    """(words, parser) of every feedback sub-command that runs (``project create``, ``serve``, ...)."""
    from rlhfkit.cli import build_parser
    from rlhfkit.feedback.cli import _subcommands

    todo = [((), _subcommands(build_parser()[0])["feedback"])]
    while todo:
        words, parser = todo.pop()
        children = _subcommands(parser)
        if not children:
            yield words, parser
        todo += [((*words, name), child) for name, child in children.items()]


def test_every_sub_command_takes_snake_case_flags_and_their_kebab_case_aliases():
    import dataclasses

    from rlhfkit.trainers.config import field_kind

    checked = set()
    for words, parser in leaves():
        options = dataclasses.fields(parser.get_default("options"))
        given = ["1" for a in parser._actions if not a.option_strings]  # positionals
        given += [word for fld in options if fld.metadata.get("required") for word in (f"--{fld.name}", "x")]
        for fld in [fld for fld in options if "_" in fld.name]:
            value = SAMPLE[field_kind(fld)[0]]
            snake = parsed(*words, *given, f"--{fld.name}", value)
            kebab = parsed(*words, *given, f"--{fld.name.replace('_', '-')}", value)
            assert vars(snake) == vars(kebab), (words, fld.name)
            assert getattr(snake, fld.name) != fld.default and snake.origins[fld.name] == f"--{fld.name}"
            checked.add(f"{' '.join(words)} --{fld.name}")
    assert {"project create --per_item", "project edit --members_only", "generate --max_new_tokens",
            "export --min_gap", "prioritise --reward_model", "invite create --max_uses"} <= checked
    assert len(checked) >= 13  # every multi-word option of every sub-command


def test_help_shows_the_snake_case_spelling_first(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["feedback", "project", "create", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--per_item INT, --per-item INT" in out and "--scale MIN MAX" in out and "--config" in out


def test_flags_beat_overrides_beat_the_config_file(url, tmp_path, capsys):
    config = tmp_path / "create.yaml"
    config.write_text(f"db: {url}\nscale: [1, 5]\nper_item: 4\ngold_rate: 0.3\n")
    args = parsed("project", "create", "p", "--config", str(config), "per_item=5", "gold_rate=0.4", "--gold_rate", "0")
    assert (args.scale, args.per_item, args.gold_rate, args.db) == ([1, 5], 5, 0.0, url)
    assert args.origins["scale"] == f"{config} line 2: scale" and args.origins["per_item"] == "override per_item=5"
    assert args.origins["gold_rate"] == "--gold_rate"
    assert "scale 1..5, 6 annotator(s) per item, gold rate 0.3" in run(
        capsys, "project", "create", "p", "--config", str(config), "per_item=5", "--per-item", "6")
    assert "added admin 'ada'" in run(capsys, "annotator", "add", "ada", "--admin", "--db", url)
    assert "ada\tadmin" in run(capsys, "annotator", "list", "--db", url)
    assert parsed("annotator", "add", "bo", "--admin", "--no_admin").admin is False


def test_the_example_export_config_runs(url, tmp_path, capsys):
    from rlhfkit.data import load_records

    import yaml

    example = EXAMPLES / "feedback_export.yaml"
    shown = (EXAMPLES.parent / "docs" / "feedback.md").read_text().split("# examples/feedback_export.yaml\n")[1]
    assert yaml.safe_load(shown.split("```")[0]) == yaml.safe_load(example.read_text())  # the docs show the file
    args = parsed("export", "--config", str(example))
    assert (args.db, args.project, args.out, args.weight, args.min_gap) == \
        ("feedback.db", "helpful", "data/helpful", "reliability", 0.25)
    Session = db.connect(url)
    with Session() as s:
        project = sv.create_project(s, "helpful", per_item=1, gold_rate=0)
        sv.import_records(s, project, [{"prompt": "p", "responses": ["a", "b", "c"]}], kinds=("pair",))
        ann = sv.add_annotator(s, "ann")[0]
        while (a := sv.next_assignment(s, "helpful", ann)) is not None:
            sv.submit_comparison(s, ann, a.id, "a", 2)
    db.engine_of(Session).dispose()
    out = run(capsys, "export", "--config", str(example), "--db", url, "--out", str(tmp_path / "export"))
    assert "pairs:" in out and len(load_records(str(tmp_path / "export" / "pairs.jsonl"))) == 3


def test_a_bad_config_file_is_one_line_naming_file_and_line_and_writes_nothing(tmp_path, capsys):
    new = tmp_path / "new.db"
    cases = [
        ("project: helpful\nout: x\nmin_gapp: 1\n", ("export",),
         "line 3: unknown ExportArgs field 'min_gapp'; did you mean 'min_gap'?"),
        ("project: helpful\nmin_gap: wide\nout: x\n", ("export",), "line 2: min_gap: expected a number, got 'wide'"),
        ("kind: [rating, triple]\nproject: helpful\n", ("import", "rows.jsonl"),
         "line 1: kind: expected one of rating, pair, ranking, got 'triple'"),
        ("gold_rate: 0\nper_item: 0\n", ("project", "create", "p"), "line 2: per_item must be between 1 and 1000"),
        ("port: 70000\n", ("serve",), "line 1: port must be 0..65535, got 70000"),
        ("members_only: maybe\n", ("project", "edit", "p"), "line 1: members_only: expected true or false"),
    ]
    for text, words, expected in cases:
        config = tmp_path / "c.yaml"
        config.write_text(text)
        line = refused(capsys, *words, "--config", str(config), "--db", str(new))
        assert line == f"error: {config} {expected}" or line.startswith(f"error: {config} {expected}"), line
        assert not new.exists() and not (tmp_path / "x").exists(), words
    assert "override 'min_gapp=1': unknown ExportArgs field 'min_gapp'; did you mean 'min_gap'?" in refused(
        capsys, "export", "--project", "helpful", "--out", "x", "min_gapp=1", "--db", str(new))
    assert "error: --out is required (a flag, a key of --config or out=...)" == refused(
        capsys, "export", "--project", "helpful", "--db", str(new))
    assert not new.exists()


@pytest.mark.parametrize("words, typo, suggestion", [
    (("project", "create", "p"), "--per-iten", "--per_item"), (("project", "create", "p"), "--per_iten", "--per_item"),
    (("export", "--project", "p", "--out", "x"), "--min-gab", "--min_gap"),
    (("invite", "create", "--project", "p"), "--max_use", "--max_uses"),
    (("prioritise", "--project", "p"), "--reward-modle", "--reward_model")])
def test_a_typo_in_a_flag_suggests_the_snake_case_name(tmp_path, capsys, words, typo, suggestion):
    line = refused(capsys, *words, typo, "1", "--db", str(tmp_path / "new.db"))
    assert line.startswith(f"error: unknown flag {typo}; did you mean {suggestion}?"), line
    assert not (tmp_path / "new.db").exists()


def _stored_prompts(url, project) -> list[tuple[str, dict | None]]:
    from sqlalchemy import select

    from rlhfkit.feedback.store import Project, Prompt

    Session = db.connect(url)
    with Session() as s:
        rows = s.execute(select(Prompt.text, Prompt.meta).join(Project).where(Project.name == project)
                         .order_by(Prompt.id)).all()
    db.engine_of(Session).dispose()
    return [(text, meta) for text, meta in rows]


def test_generate_reads_prompts_as_the_training_commands_do(url, tmp_path, capsys):
    """--prompts takes every prompt source `rlhfkit ppo` / `grpo` take (rollout.prompts.load_prompts), and
    rows with a 'prompt' column whatever else they hold, as before."""
    from rlhfkit.testing import save_tiny

    policy = save_tiny(tmp_path / "policy")
    user = lambda text: {"role": "user", "content": text}  # noqa: E731
    answer = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    files = {
        # conversations: the turns before the last answer
        "chat.jsonl": [{"messages": [user("hi"), answer("hello"), user("sing"), answer("la")]}],
        # preference pairs sharing their first turns: that shared prefix
        "shared.jsonl": [{"chosen": [user("the moon"), answer("rises")], "rejected": [user("the moon"), answer("no")]}],
        # the feedback import's own rows: the prompt, the rest left alone
        "rated.jsonl": [{"prompt": "the band", "response": "plays"}],
    }
    for name, rows in files.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "UPPER.TXT").write_text(" the river \n")
    run(capsys, "project", "create", "reads", "--db", url)
    for name in (*files, "UPPER.TXT"):
        out = run(capsys, "generate", "--project", "reads", "--policy", str(policy), "--prompts", str(tmp_path / name),
                  "--n", "1", "--max-new-tokens", "3", "--db", url)
        assert "for 1 prompt(s)" in out, name
    stored = _stored_prompts(url, "reads")
    assert stored[0][1] == {"messages": [user("hi"), answer("hello"), user("sing")]}
    assert stored[1][1] == {"messages": [user("the moon")]}
    assert [text for text, _ in stored[2:]] == ["the band", "the river"]  # a .txt line stripped, as before


def test_generate_names_the_file_and_line_of_a_bad_prompt(url, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "fine"}\n{"prompt": "also fine"}\n{"prompt": ""}\n')
    line = refused(capsys, "generate", "--project", "p", "--policy", "x", "--prompts", str(rows), "--db", url)
    assert f"{rows} line 3 (row 2): field 'prompt' is empty" in line
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "once upon a time"}\n')
    line = refused(capsys, "generate", "--project", "p", "--policy", "x", "--prompts", str(texts), "--db", url)
    assert "has no 'prompt' column (columns: ['text'])" in line and "texts to continue, not prompts" in line
    line = refused(capsys, "generate", "--project", "p", "--policy", "x", "--prompts", str(tmp_path / "no.parquet"),
                   "--db", url)
    assert f"--prompts: no such file '{tmp_path / 'no.parquet'}'; give a .txt file" in line
