"""``rlhfkit feedback`` commands for running a project as a team (registered by ``cli.add_feedback_parser``):

    rlhfkit feedback project edit helpful --members_only yes --per_item 3
    rlhfkit feedback project archive helpful            # hidden from annotators, data kept; `restore` undoes it
    rlhfkit feedback member add|remove --project helpful ada
    rlhfkit feedback member list --project helpful
    rlhfkit feedback invite create --project helpful --max_uses 5 --days 7   # prints the link's path once
    rlhfkit feedback invite list|revoke --project helpful [ID]
"""

from __future__ import annotations

from dataclasses import dataclass

from ..trainers.config import f
from .cli import DbArgs, ProjectArgs, _session, add_command


@dataclass
class ProjectEditArgs(DbArgs):
    rename: str | None = f(None, "A new name.")
    per_item: int | None = f(None, "Distinct annotators per item.")
    gold_rate: float | None = f(None, "Share of served items that are gold.")
    timeout_minutes: int | None = f(None, "Time per item before it goes to someone else.")
    instructions: str | None = f(None, "Text shown above every item (Markdown).")
    members_only: bool | None = f(None, "True (yes): only members and admins see the project; false (no): every "
                                        "annotator does.")


@dataclass
class InviteCreateArgs(ProjectArgs):
    note: str = f("", "Who it is for (admins see it).")
    max_uses: int | None = f(None, "How many people may join with it (none: any number).")
    days: int = f(14, "How long it works, in days (0: until revoked).")


def add_team_parsers(psub, sub) -> None:
    """Add ``project edit|archive|restore`` to the project sub-commands and the ``member`` and ``invite`` commands."""
    add_command(psub, "edit", ProjectEditArgs, _project_edit,
                "change a project's settings (what is not given stays)").add_argument("name")
    for name, archived, text in (("archive", True, "hide a project from annotators (its data stays)"),
                                 ("restore", False, "show an archived project to annotators again")):
        add_command(psub, name, DbArgs, lambda a, archived=archived: _archive(a, archived), text).add_argument("name")

    member = sub.add_parser("member", help="who may judge a members-only project")
    msub = member.add_subparsers(dest="action", required=True)
    for name, text in (("add", "make an annotator a member"), ("remove", "end a membership (open items released)")):
        add_command(msub, name, ProjectArgs, _member, text).add_argument("name", help="annotator name")
    add_command(msub, "list", ProjectArgs, _member, "the project's members")

    invite = sub.add_parser("invite", help="invite links to a project")
    isub = invite.add_subparsers(dest="action", required=True)
    add_command(isub, "create", InviteCreateArgs, _invite, "a new invite link; prints its path once")
    add_command(isub, "list", ProjectArgs, _invite, "the project's invite links and their state")
    add_command(isub, "revoke", ProjectArgs, _invite, "stop an invite link").add_argument("id", type=int)


def _project_edit(args) -> int:
    from . import service

    with _session(args) as s:
        p = service.update_project(s, args.name, name=args.rename, per_item=args.per_item, gold_rate=args.gold_rate,
                                   timeout_minutes=args.timeout_minutes, instructions=args.instructions,
                                   members_only=args.members_only)
        print(f"project {p.name!r}: {p.per_item} annotator(s) per item, gold rate {p.gold_rate}, items expire after "
              f"{p.timeout_minutes} min, {'members only' if p.members_only else 'open to every annotator'}")
    return 0


def _archive(args, archived: bool) -> int:
    from . import service

    with _session(args) as s:
        p = service.set_archived(s, args.name, archived)
        print(f"project {p.name!r} is {'archived' if archived else 'restored'}")
    return 0


def _member(args) -> int:
    from . import service

    with _session(args) as s:
        if args.action == "list":
            for person in service.members(s, args.project):
                print(person.name)
            return 0
        change = service.add_member if args.action == "add" else service.remove_member
        changed = change(s, args.project, args.name)
        verb = {"add": ("is now a member of", "was already a member of"),
                "remove": ("is no longer a member of", "was not a member of")}[args.action][0 if changed else 1]
        print(f"{args.name} {verb} {args.project!r}")
    return 0


def _invite(args) -> int:
    from . import service

    with _session(args) as s:
        if args.action == "create":
            invite, code = service.create_invite(s, args.project, note=args.note, max_uses=args.max_uses,
                                                 days=args.days or None)
            print(f"invite {invite.id} to {args.project!r}; its link, shown only now (only a hash is stored), is the "
                  f"server's address followed by:\n/join/{code}")
        elif args.action == "revoke":
            service.revoke_invite(s, args.project, args.id)
            print(f"invite {args.id} revoked")
        else:
            for i in service.list_invites(s, args.project):
                uses = f"{i.uses}" + (f"/{i.max_uses}" if i.max_uses else "")
                ends = i.expires_at.strftime("%Y-%m-%d %H:%M UTC") if i.expires_at else "never"
                print(f"{i.id}\t{service.invite_state(i)}\tused {uses}\texpires {ends}\t{i.note}")
    return 0
