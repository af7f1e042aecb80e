"""``rlhfkit feedback ...``: run a human-feedback project from the shell.

    rlhfkit feedback init                                  # create / upgrade the database schema
    rlhfkit feedback project create helpful --scale 1 3 --per-item 2 --gold-rate 0.1
    rlhfkit feedback annotator add ada --admin             # prints ada's token, once
    rlhfkit feedback import --project helpful data.jsonl --kind rating pair
    rlhfkit feedback generate --project helpful --policy runs/sft --prompts prompts.jsonl --n 2
    rlhfkit feedback serve --host 0.0.0.0 --port 8000      # the web app
    rlhfkit feedback progress --project helpful
    rlhfkit feedback report --project helpful              # agreement, calibration, per annotator
    rlhfkit feedback export --project helpful --out data/helpful
    rlhfkit feedback prioritise --project helpful --reward-model runs/reward   # active selection
    rlhfkit feedback project edit|archive|restore, member add|remove|list, invite create|list|revoke
                                                           # running it as a team (cli_team.py)

Every command takes ``--db URL`` (a SQLite path, ``sqlite:///...`` or
``postgresql+psycopg://user:pass@host/db``); the default is ``$RLHFKIT_FEEDBACK_DB`` or
``sqlite:///feedback.db``. The schema is migrated on first use, so ``init`` is optional.

A refused command (bad argument, unreadable file, a ``--db`` that is not a feedback database)
prints one line ``error: ...`` naming what to fix and exits with status 2, as argparse does for
a malformed command line; a SQLite file the failed command would have created is removed again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .cli_team import COMMANDS as TEAM_COMMANDS
from .errors import FeedbackError

USAGE_ERROR = 2  # the exit status of every refusal (argparse's for a bad command line)


class CommandFailed(SystemExit):
    """Exit with status 2 after ``error: ...`` was printed; ``str()`` is that line (for callers and tests)."""

    def __init__(self, message: str) -> None:
        super().__init__(USAGE_ERROR)
        self.message = message

    def __str__(self) -> str:
        return self.message


def add_feedback_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``feedback`` and its sub-commands to an ``add_subparsers()`` object; dispatch with ``args.handler(args)``."""
    fb = subparsers.add_parser("feedback", help="collect human feedback: store, web app, report, export",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fb.set_defaults(handler=run)
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", default=None, help="database URL or SQLite path (default: $RLHFKIT_FEEDBACK_DB or "
                                                "sqlite:///feedback.db)")
    on = argparse.ArgumentParser(add_help=False, parents=[db])
    on.add_argument("--project", required=True, help="project name (or id)")
    sub = fb.add_subparsers(dest="feedback_command", required=True)

    sub.add_parser("init", parents=[db], help="create or upgrade the database schema (Alembic)")
    project = sub.add_parser("project", help="create, list, edit, archive or restore projects")
    psub = project.add_subparsers(dest="action", required=True)
    create = psub.add_parser("create", parents=[db], help="a new project")
    create.add_argument("name")
    create.add_argument("--scale", nargs=2, type=int, default=[1, 3], metavar=("MIN", "MAX"),
                        help="integer rating scale (default 1 3)")
    create.add_argument("--per-item", type=int, default=2, help="distinct annotators per item (default 2)")
    create.add_argument("--gold-rate", type=float, default=0.1, help="share of served items that are gold (0.1)")
    create.add_argument("--instructions", default="", help="text shown to annotators above every item")
    create.add_argument("--timeout-minutes", type=int, default=30,
                        help="an item taken and not submitted in this time goes to someone else (default 30)")
    psub.add_parser("list", parents=[db], help="all projects")

    annotator = sub.add_parser("annotator", help="add, list, deactivate annotators or reset a token")
    asub = annotator.add_subparsers(dest="action", required=True)
    add = asub.add_parser("add", parents=[db], help="a new annotator; prints the token once")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may create projects, import, see progress and export")
    asub.add_parser("list", parents=[db], help="all annotators")
    for name, text in (("deactivate", "stop a token from signing in (judgements stay)"),
                       ("activate", "let a deactivated annotator sign in again"),
                       ("reset-token", "issue a new token (the old one stops working); prints it once")):
        asub.add_parser(name, parents=[db], help=text).add_argument("name")

    imp = sub.add_parser("import", parents=[on], help="import prompts and responses from a file")
    imp.add_argument("file", help="JSONL / JSON / CSV / Parquet rows: prompt + response / responses / chosen+rejected")
    imp.add_argument("--kind", nargs="+", default=["rating"], choices=["rating", "pair", "ranking"],
                     help="items to make per prompt (default: rating)")

    gen = sub.add_parser("generate", parents=[on], help="sample responses from a policy and queue them")
    gen.add_argument("--policy", required=True, help="folder (or hub name) of a causal LM and its tokenizer")
    gen.add_argument("--prompts", required=True, help="a .txt file (one prompt per line) or records with 'prompt'")
    gen.add_argument("--n", type=int, default=2, help="responses per prompt (default 2)")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--kind", nargs="+", default=["rating"], choices=["rating", "pair", "ranking"])

    serve = sub.add_parser("serve", parents=[db], help="run the annotation web app")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--secret", default=None, help="key signing session cookies (default: "
                                                      "$RLHFKIT_FEEDBACK_SECRET, else random per start: "
                                                      "everyone is signed out when the server restarts)")

    sub.add_parser("progress", parents=[on], help="items, assignments and per-annotator counts")
    report = sub.add_parser("report", parents=[on], help="agreement, calibration and reliability per annotator")
    report.add_argument("--out", default=None, help="also write the Markdown report to this file")
    export = sub.add_parser("export", parents=[on], help="write pairs / ratings / rankings JSONL for training")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--weight", choices=["reliability", "none"], default="reliability",
                        help="per-pair weight from annotator reliability, or 1 for every pair")
    export.add_argument("--min-gap", type=float, default=0.25,
                        help="smallest calibrated rating gap that makes a preference pair (default 0.25)")
    from .active import add_active_arguments
    from .cli_team import add_team_parsers

    add_active_arguments(sub.add_parser("prioritise", parents=[on],
                                        help="queue first the pairs a reward model is least sure about"))
    add_team_parsers(psub, sub, db, on)  # project edit/archive/restore, member, invite
    return fb


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``feedback`` command; refusals become one ``error: ...`` line on stderr and exit status 2."""
    from sqlalchemy.exc import SQLAlchemyError

    command = args.feedback_command + ("_" + args.action.replace("-", "_") if getattr(args, "action", None) else "")
    try:
        return _COMMANDS[command](args)
    except FeedbackError as err:
        message = err.message
    except SQLAlchemyError as err:  # the database failed mid-command (locked, read-only, server gone)
        message = f"database error: {str(getattr(err, 'orig', None) or err).strip().splitlines()[0]}"
    except OSError as err:  # an output file or folder that cannot be written
        message = str(err)
    line = "error: " + _flag_first(" ".join(message.split()), args)
    print(line, file=sys.stderr)
    raise CommandFailed(line) from None


POSITIONAL = {"name", "file", "id"}  # argument names of the sub-commands that are not --flags


def _flag_first(message: str, args: argparse.Namespace) -> str:
    """A store message about one of this command's options ("per_item must be ...", in the web app's field
    names) is put after the flag the user typed: "--per-item: per_item must be ..."."""
    word, _, rest = message.partition(" ")
    if rest.startswith("must ") and word in vars(args) and word not in POSITIONAL:
        return f"--{word.replace('_', '-')}: {message}"
    return message


def _fail(message: str) -> FeedbackError:
    return FeedbackError(message, 422)


@contextmanager
def _session(args) -> Iterator:
    """A session on ``--db``; the engine is disposed afterwards (no pooled connection outlives the command).
    When the command fails on a SQLite file it created, the file is removed: a typo writes nothing."""
    from .db import connect, default_url, engine_of, new_sqlite_file

    target = args.db or default_url()
    created = new_sqlite_file(target)
    factory = None
    try:
        factory = connect(target)
        with factory() as s:
            yield s
    except BaseException:
        if factory is not None:
            engine_of(factory).dispose()
            factory = None
        if created is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(created) + suffix).unlink(missing_ok=True)
        raise
    finally:
        if factory is not None:
            engine_of(factory).dispose()


def _init(args) -> int:
    from .db import connect, current_revision, default_url, engine_of, normalize_url

    url = normalize_url(args.db or default_url())
    factory = connect(url)
    try:
        revision = current_revision(engine_of(factory))
    finally:
        engine_of(factory).dispose()
    print(f"database {_hide_password(url)} is at schema revision {revision}")
    return 0


def _project_create(args) -> int:
    from . import service

    with _session(args) as s:
        p = service.create_project(s, args.name, scale=tuple(args.scale), per_item=args.per_item,
                                   gold_rate=args.gold_rate, instructions=args.instructions,
                                   timeout_minutes=args.timeout_minutes)
        print(f"created project {p.name!r} (id {p.id}): scale {p.scale_min}..{p.scale_max}, {p.per_item} "
              f"annotator(s) per item, gold rate {p.gold_rate}, open items expire after {p.timeout_minutes} min")
    return 0


def _project_list(args) -> int:
    from . import service

    with _session(args) as s:
        for p in service.list_projects(s):
            print(f"{p.id}\t{p.name}\tscale {p.scale_min}..{p.scale_max}\tper item {p.per_item}\tgold {p.gold_rate}")
    return 0


def _annotator_add(args) -> int:
    from . import service

    with _session(args) as s:
        a, token = service.add_annotator(s, args.name, admin=args.admin)
        print(f"added {'admin' if a.is_admin else 'annotator'} {a.name!r}. Their token, shown only now "
              f"(only a hash is stored):\n{token}")
    return 0


def _annotator_list(args) -> int:
    from . import service

    with _session(args) as s:
        for a in service.list_annotators(s):
            print(f"{a.id}\t{a.name}\t{'admin' if a.is_admin else 'annotator'}\t{'active' if a.active else 'inactive'}")
    return 0


def _annotator_active(args, active: bool) -> int:
    from . import service

    with _session(args) as s:
        a = service.set_annotator_active(s, args.name, active)
        print(f"annotator {a.name!r} is now {'active' if active else 'deactivated'}")
    return 0


def _annotator_reset_token(args) -> int:
    from . import service

    with _session(args) as s:
        print(f"new token for {args.name!r}, shown only now:\n{service.reset_token(s, args.name)}")
    return 0


def _import(args) -> int:
    from . import service

    with _session(args) as s:
        summary = service.import_file(s, args.project, args.file, kinds=tuple(args.kind))
    print(_summary(summary))
    return 0


def _summary(summary: dict) -> str:
    made = ", ".join(f"{n} {kind}" for kind, n in summary["items_created"].items())
    return (f"{summary['rows']} row(s): {summary['prompts_created']} new prompt(s), {summary['responses_created']} new "
            f"response(s), items created: {made}; {summary['items_existing']} already existed")


def _read_prompts(path: str) -> list:
    from .sources import not_utf8, read_records

    if Path(path).suffix.lower() == ".txt":
        try:
            prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise _fail(not_utf8(path)) from None
        except FileNotFoundError:
            raise _fail(f"--prompts: no such file {path!r}; give a .txt file (one prompt per line) or records with "
                        "a 'prompt' column") from None
        except OSError as err:
            raise _fail(f"--prompts: cannot read {path}: {err.strerror or err}") from None
        if not prompts:
            raise _fail(f"{path}: no prompts (one per line)")
        return prompts
    rows = read_records(path)
    if "prompt" not in rows.column_names:
        raise _fail(f"{path} has no 'prompt' column (columns: {rows.column_names})")
    return list(rows["prompt"])


def _generate(args) -> int:
    from . import service

    prompts = _read_prompts(args.prompts)
    with _session(args) as s:
        responses = service.generate_responses(s, args.project, args.policy, prompts, n=args.n,
                                               max_new_tokens=args.max_new_tokens, seed=args.seed,
                                               temperature=args.temperature, kinds=tuple(args.kind))
    print(f"generated {len(responses)} distinct response(s) for {len(prompts)} prompt(s) with {args.policy}")
    return 0


def _serve(args) -> int:
    import uvicorn

    from .app import create_app
    from .db import default_url

    if not 0 <= args.port <= 65535:
        raise _fail(f"--port must be 0..65535, got {args.port}")
    try:
        app = create_app(args.db or default_url(), secret=args.secret)
    except ValueError as err:  # e.g. a secret too short to sign cookies safely
        raise _fail(str(err)) from None
    _first_admin(args)
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def _first_admin(args) -> None:
    """On a database with no admin yet, create ``admin`` and print its token once: one command starts a usable app."""
    from . import service

    with _session(args) as s:
        if any(a.is_admin for a in service.list_annotators(s)):
            return
        name = "admin"
        taken = {a.name for a in service.list_annotators(s)}
        while name in taken:
            name += "_"
        _, token = service.add_annotator(s, name, admin=True)
    print(f"No admin yet: created {name!r}. Sign in at http://{args.host}:{args.port}/signin with this token "
          f"(shown once; `rlhfkit feedback annotator reset-token {name}` issues a new one):\n\n    {token}\n",
          flush=True)


def _progress(args) -> int:
    from . import service

    with _session(args) as s:
        print(json.dumps(service.progress(s, args.project), indent=2))
    return 0


def _report(args) -> int:
    from . import service
    from .quality import report_markdown

    if args.out:  # before the project is read, so a typo costs nothing
        out = Path(args.out)
        blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        if out.is_dir() or blocker is not None:
            what = f"{str(out)!r} is a folder" if out.is_dir() else f"{str(blocker)!r} is a file"
            raise _fail(f"--out: {what}; give the path of the Markdown file to write")
    with _session(args) as s:
        text = report_markdown(service.collect(s, args.project))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def _export(args) -> int:
    from . import service
    from .export import export

    out = Path(args.out)
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # before the project is read: nothing would be written anyway
        raise _fail(f"--out: {str(blocker)!r} is a file; give a folder for the exported JSONL files")
    with _session(args) as s:
        data = service.collect(s, args.project)
    try:
        paths = export(data, args.out, weight=args.weight, min_gap=args.min_gap)
    except ValueError as err:
        raise _fail(str(err)) from None
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _prioritise(args) -> int:
    from .active import run_prioritise

    return run_prioritise(args)


_COMMANDS = {
    "prioritise": _prioritise,
    "init": _init, "project_create": _project_create, "project_list": _project_list,
    "annotator_add": _annotator_add, "annotator_list": _annotator_list,
    "annotator_deactivate": lambda a: _annotator_active(a, False), "annotator_activate": lambda a: _annotator_active(a, True),
    "annotator_reset_token": _annotator_reset_token, "import": _import, "generate": _generate, "serve": _serve,
    "progress": _progress, "report": _report, "export": _export,
}
_COMMANDS.update(TEAM_COMMANDS)


def main(argv: list[str] | None = None) -> int:
    """``python -m rlhfkit.feedback.cli ...`` (the same as ``rlhfkit feedback ...``)."""
    parser = argparse.ArgumentParser(prog="rlhfkit")
    add_feedback_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
