"""``rlhfkit feedback ...``: run a human-feedback project from the shell.

    rlhfkit feedback init                                  # create / upgrade the database schema
    rlhfkit feedback project create helpful --scale 1 3 --per_item 2 --gold_rate 0.1
    rlhfkit feedback annotator add ada --admin             # prints ada's token, once
    rlhfkit feedback import --project helpful data.jsonl --kind rating pair
    rlhfkit feedback generate --project helpful --policy runs/sft --prompts prompts.jsonl --n 2
    rlhfkit feedback serve --host 0.0.0.0 --port 8000      # the web app
    rlhfkit feedback progress --project helpful
    rlhfkit feedback report --project helpful              # agreement, calibration, per annotator
    rlhfkit feedback export --config examples/feedback_export.yaml --out data/helpful
    rlhfkit feedback prioritise --project helpful --reward_model runs/reward   # active selection
    rlhfkit feedback project edit|archive|restore, member add|remove|list, invite create|list|revoke
                                                           # running it as a team (cli_team.py)

Options follow the other commands (``rlhfkit/cli_args.py``): ``--per_item`` or ``--per-item``,
bare booleans (``--admin``, ``--no_admin``), ``--config file.yaml`` whose keys are the
sub-command's option names, and ``key=value`` overrides; flags beat overrides, overrides beat
the file. Every command takes ``--db URL`` (a SQLite path, ``sqlite:///...`` or
``postgresql+psycopg://user:pass@host/db``); the default is ``$RLHFKIT_FEEDBACK_DB`` or
``sqlite:///feedback.db``. The schema is migrated on first use, so ``init`` is optional.

A refused command (bad argument, unreadable file, a ``--db`` that is not a feedback database)
prints one line ``error: ...`` naming what to fix (the flag, YAML line or override that set a
value) and exits with status 2, as argparse does for a malformed command line; a SQLite file
the failed command would have created is removed again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .. import cli_args
from ..cli_args import UsageError
from ..trainers.config import f
from .errors import FeedbackError

USAGE_ERROR = 2  # the exit status of every refusal (argparse's for a bad command line)
KINDS = ("rating", "pair", "ranking")


class CommandFailed(SystemExit):
    """Exit with status 2 after ``error: ...`` was printed; ``str()`` is that line (for callers and tests)."""

    def __init__(self, message: str) -> None:
        super().__init__(USAGE_ERROR)
        self.message = message

    def __str__(self) -> str:
        return self.message


# ------------------------------------------------------------------ options of each sub-command
# Metadata beyond the help text: required=True, choices=(...) (checked by _check_metadata); nargs, metavar (flags).
def _kind():  # import and generate
    return f(["rating"], "Items to make per prompt: rating, pair and/or ranking.", choices=KINDS, metavar="KIND")


@dataclass
class DbArgs:
    db: str | None = f(None, "Database URL or SQLite path; none: $RLHFKIT_FEEDBACK_DB, else sqlite:///feedback.db.")


@dataclass
class ProjectArgs(DbArgs):
    project: str = f("", "Project name (or id); required.", required=True)


@dataclass
class ProjectCreateArgs(DbArgs):
    scale: list[int] = f([1, 3], "Integer rating scale: lowest and highest score.", nargs=2, metavar=("MIN", "MAX"))
    per_item: int = f(2, "Distinct annotators per item.")
    gold_rate: float = f(0.1, "Share of served items that are gold.")
    instructions: str = f("", "Text shown to annotators above every item (Markdown).")
    timeout_minutes: int = f(30, "An item taken and not submitted in this time goes to someone else.")


@dataclass
class AnnotatorAddArgs(DbArgs):
    admin: bool = f(False, "May create projects, import, see progress and export.")


@dataclass
class ImportArgs(ProjectArgs):
    kind: list[str] = _kind()


@dataclass
class GenerateArgs(ProjectArgs):
    policy: str = f("", "Folder (or hub name) of a causal LM and its tokenizer; required.", required=True)
    prompts: str = f("", "A .txt file (one prompt per line), or records with a 'prompt' column, conversations or "
                          "preference pairs in any format the data layer reads; required.", required=True)
    n: int = f(2, "Responses per prompt.")
    max_new_tokens: int = f(64, "Longest response, in tokens.")
    temperature: float = f(1.0, "Sampling temperature.")
    seed: int = f(0, "Seed of the sampling.")
    kind: list[str] = _kind()


@dataclass
class ServeArgs(DbArgs):
    host: str = f("127.0.0.1", "Interface to listen on (0.0.0.0: every interface).")
    port: int = f(8000, "Port to listen on.")
    secret: str | None = f(None, "Key signing session cookies (default: $RLHFKIT_FEEDBACK_SECRET, else random per "
                                 "start: everyone is signed out when the server restarts).")


@dataclass
class ReportArgs(ProjectArgs):
    out: str | None = f(None, "Also write the Markdown report to this file.")


@dataclass
class ExportArgs(ProjectArgs):
    out: str = f("", "Output folder; required.", required=True)
    weight: str = f("reliability", "Per-pair weight from annotator reliability, or none: 1 for every pair.",
                    choices=("reliability", "none"))
    min_gap: float = f(0.25, "Smallest calibrated rating gap that makes a preference pair.")


@dataclass
class PrioritiseArgs(ProjectArgs):
    reward_model: str = f("", "Folder of a trained reward model (num_labels=1 sequence classifier + tokenizer); "
                              "required.", required=True)
    batch_size: int = f(32, "Responses scored per forward pass.")
    rating_threshold: float | None = f(None, "Also prioritise rating items whose reward is near this value "
                                             "(reward-model units); none: leave rating items as they are.")


def add_command(sub, name: str, options, run, help: str) -> argparse.ArgumentParser:
    """A sub-command whose flags are ``options``' fields (``cli_args`` conventions); ``run(args)`` runs it.
    Positional arguments are added to the returned parser."""
    parser = sub.add_parser(name, help=help, allow_abbrev=False,
                            description=f"{help[0].upper()}{help[1:]}; every option is a flag, a key of the --config "
                                        "YAML and a key=value override")
    cli_args.add_config_arguments(parser, options)
    parser.set_defaults(run=run, options=options)
    return parser


def add_feedback_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``feedback`` and its sub-commands to an ``add_subparsers()`` object; :func:`main` parses and runs them."""
    fb = subparsers.add_parser("feedback", help="collect human feedback: store, web app, report, export",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = fb.add_subparsers(dest="feedback_command", required=True)

    add_command(sub, "init", DbArgs, _init, "create or upgrade the database schema (Alembic)")
    project = sub.add_parser("project", help="create, list, edit, archive or restore projects")
    psub = project.add_subparsers(dest="action", required=True)
    add_command(psub, "create", ProjectCreateArgs, _project_create, "a new project").add_argument("name")
    add_command(psub, "list", DbArgs, _project_list, "all projects")

    annotator = sub.add_parser("annotator", help="add, list, deactivate annotators or reset a token")
    asub = annotator.add_subparsers(dest="action", required=True)
    add_command(asub, "add", AnnotatorAddArgs, _annotator_add, "a new annotator; prints the token once") \
        .add_argument("name")
    add_command(asub, "list", DbArgs, _annotator_list, "all annotators")
    for name, run, text in (
            ("deactivate", lambda a: _annotator_active(a, False), "stop a token from signing in (judgements stay)"),
            ("activate", lambda a: _annotator_active(a, True), "let a deactivated annotator sign in again"),
            ("reset-token", _annotator_reset_token, "issue a new token (the old one stops working); prints it once")):
        add_command(asub, name, DbArgs, run, text).add_argument("name")

    add_command(sub, "import", ImportArgs, _import, "import prompts and responses from a file").add_argument(
        "file", help="JSONL / JSON / CSV / Parquet rows: prompt + response / responses / chosen+rejected")
    add_command(sub, "generate", GenerateArgs, _generate, "sample responses from a policy and queue them")
    add_command(sub, "serve", ServeArgs, _serve, "run the annotation web app")
    add_command(sub, "progress", ProjectArgs, _progress, "items, assignments and per-annotator counts")
    add_command(sub, "report", ReportArgs, _report, "agreement, calibration and reliability per annotator")
    add_command(sub, "export", ExportArgs, _export, "write pairs / ratings / rankings JSONL for training")
    add_command(sub, "prioritise", PrioritiseArgs, _prioritise,
                "queue first the pairs a reward model is least sure about")
    from .cli_team import add_team_parsers

    add_team_parsers(psub, sub)  # project edit/archive/restore, member, invite
    return fb


# ------------------------------------------------------------------ parse and run
def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run ``feedback <sub-command> ...`` (``argv`` starts with the word ``feedback``); ``parser`` is the
    ``rlhfkit`` parser holding ``feedback`` (built here when not given). Refusals become one ``error: ...``
    line on stderr and exit status 2."""
    from sqlalchemy.exc import SQLAlchemyError

    if parser is None:
        parser = argparse.ArgumentParser(prog="rlhfkit")
        add_feedback_parser(parser.add_subparsers(dest="command", required=True))
    try:
        args = parse(parser, list(sys.argv[1:] if argv is None else argv))
    except UsageError as err:
        _refuse(str(err))
    try:
        return args.run(args)
    except FeedbackError as err:
        message = err.message
    except SQLAlchemyError as err:  # the database failed mid-command (locked, read-only, server gone)
        message = f"database error: {str(getattr(err, 'orig', None) or err).strip().splitlines()[0]}"
    except OSError as err:  # an output file or folder that cannot be written
        message = str(err)
    _refuse(_flag_first(" ".join(message.split()), args))


def _refuse(message: str) -> NoReturn:
    line = "error: " + message
    print(line, file=sys.stderr)
    raise CommandFailed(line) from None


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The sub-command's positional arguments and its options (defaults <- ``--config`` YAML <- ``key=value``
    overrides <- flags, each checked where it was given) in one namespace; ``origins[name]`` says where an
    option was set. Argparse's own refusals (no sub-command, a missing positional) exit with status 2 here."""
    leaf, words = parser, 0
    while words < len(argv) and (choices := _subcommands(leaf)) and argv[words] in choices:
        leaf, words = choices[argv[words]], words + 1
    rest, overrides = cli_args.split_overrides(argv[words:], leaf)
    args, extras = parser.parse_known_args([*argv[:words], *rest])
    cli_args.reject_unknown(extras, leaf, " ".join(argv[:words]))
    config, origins = cli_args.build_config(args.options, args, overrides)
    _check_metadata(config, origins)
    return argparse.Namespace(**{**vars(args), **dataclasses.asdict(config), "origins": origins})


def _check_metadata(config, origins: dict) -> None:
    """A ``required`` option has a value; a ``choices`` option (or each item of a list) is one of them."""
    for fld in dataclasses.fields(config):
        value, choices = getattr(config, fld.name), fld.metadata.get("choices")
        if fld.metadata.get("required") and value in (None, ""):
            raise UsageError(f"--{fld.name} is required (a flag, a key of --config or {fld.name}=...)")
        wrong = [v for v in (value if isinstance(value, list) else [value]) if choices and v not in choices]
        if wrong:
            raise UsageError(f"{origins.get(fld.name, f'--{fld.name}')}: expected one of {', '.join(choices)}, "
                             f"got {wrong[0]!r}")


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    """{name: sub-parser} of ``parser``'s sub-commands ({} for a sub-command that has none)."""
    action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)  # noqa: SLF001
    return action.choices if action is not None else {}


def _origin(args: argparse.Namespace, name: str) -> str:
    """Where option ``name`` was set: ``--name`` (also when not given), ``file.yaml line 3: name`` or
    ``override name=value``."""
    return args.origins.get(name, f"--{name}")


def _flag_first(message: str, args: argparse.Namespace) -> str:
    """A store message about one of this command's options ("per_item must be ...", in the web app's field
    names) is put after the flag, YAML line or override that set it: "--per_item: per_item must be ..."."""
    word, _, rest = message.partition(" ")
    if rest.startswith("must ") and word in {fld.name for fld in dataclasses.fields(args.options)}:
        origin = _origin(args, word)
        return f"{origin} {rest}" if origin.endswith(f": {word}") else f"{origin}: {message}"
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


PROMPT_INPUTS = ("a .txt file (one prompt per line), or records (.jsonl, .json, .csv, .parquet, a folder or a saved "
                 "dataset) with a 'prompt' column, conversations ('messages') or preference pairs")


def _read_prompts(path: str, origin: str = "--prompts") -> list:
    """The prompts of ``path`` through the reader every training command uses (``rollout.prompts.load_prompts``):
    a ``.txt`` file's lines (stripped), the 'prompt' column of any rows (whatever else they hold: an import
    file's ``prompt`` + ``response`` rows too), the turns before a conversation's last answer, the prompt of
    preference pairs. Refusals name the file and line."""
    from ..data import DataError
    from ..rollout.prompts import load_prompts
    from .sources import not_utf8

    local = Path(path).expanduser()
    if local.suffix.lower() in (".txt", ".jsonl", ".json", ".csv", ".parquet") and not local.exists():
        raise _fail(f"{origin}: no such file {path!r}; give {PROMPT_INPUTS}")
    text_file = local.suffix.lower() == ".txt"
    try:
        prompts, _ = load_prompts(path, columns=False, texts=False)
    except DataError as err:
        message = str(err)
        if text_file and "not UTF-8" in message:
            message = not_utf8(local)  # the line and its column, as the import of a file says it
        raise _fail(message) from None
    except OSError as err:  # a file that cannot be read (permissions, a folder named x.txt)
        raise _fail(f"{origin}: cannot read {path}: {err.strerror or err}") from None
    return [p.strip() for p in prompts] if text_file else prompts


def _generate(args) -> int:
    from . import service

    prompts = _read_prompts(args.prompts, _origin(args, "prompts"))
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
        raise _fail(f"{_origin(args, 'port')} must be 0..65535, got {args.port}")
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
            raise _fail(f"{_origin(args, 'out')}: {what}; give the path of the Markdown file to write")
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
        raise _fail(f"{_origin(args, 'out')}: {str(blocker)!r} is a file; give a folder for the exported JSONL files")
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


if __name__ == "__main__":
    sys.exit(main())
