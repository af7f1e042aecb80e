"""``rlhfkit feedback`` commands for running a project as a team (registered by ``cli.add_feedback_parser``):

    rlhfkit feedback project edit helpful --members-only yes --per-item 3
    rlhfkit feedback project archive helpful            # hidden from annotators, data kept; `restore` undoes it
    rlhfkit feedback member add|remove --project helpful ada
    rlhfkit feedback member list --project helpful
    rlhfkit feedback invite create --project helpful --max-uses 5 --days 7   # prints the link's path once
    rlhfkit feedback invite list|revoke --project helpful [ID]
"""

from __future__ import annotations

import argparse

YES_NO = {"yes": True, "no": False}


def add_team_parsers(psub, sub, db: argparse.ArgumentParser, on: argparse.ArgumentParser) -> None:
    """Add ``project edit|archive|restore`` to the project sub-commands and the ``member`` and ``invite`` commands."""
    edit = psub.add_parser("edit", parents=[db], help="change a project's settings (what is not given stays)")
    edit.add_argument("name")
    edit.add_argument("--rename", default=None, help="a new name")
    edit.add_argument("--per-item", type=int, default=None, help="distinct annotators per item")
    edit.add_argument("--gold-rate", type=float, default=None, help="share of served items that are gold")
    edit.add_argument("--timeout-minutes", type=int, default=None, help="time per item before it goes to someone else")
    edit.add_argument("--instructions", default=None, help="text shown above every item (Markdown)")
    edit.add_argument("--members-only", choices=sorted(YES_NO), default=None,
                      help="yes: only members (and admins) see the project; no: every annotator does")
    for name, text in (("archive", "hide a project from annotators (its data stays)"),
                       ("restore", "show an archived project to annotators again")):
        psub.add_parser(name, parents=[db], help=text).add_argument("name")

    member = sub.add_parser("member", help="who may judge a members-only project")
    msub = member.add_subparsers(dest="action", required=True)
    for name, text in (("add", "make an annotator a member"), ("remove", "end a membership (open items released)")):
        msub.add_parser(name, parents=[on], help=text).add_argument("name", help="annotator name")
    msub.add_parser("list", parents=[on], help="the project's members")

    invite = sub.add_parser("invite", help="invite links to a project")
    isub = invite.add_subparsers(dest="action", required=True)
    create = isub.add_parser("create", parents=[on], help="a new invite link; prints its path once")
    create.add_argument("--note", default="", help="who it is for (admins see it)")
    create.add_argument("--max-uses", type=int, default=None, help="how many people may join with it (default: any)")
    create.add_argument("--days", type=int, default=14, help="how long it works (default 14; 0: until revoked)")
    isub.add_parser("list", parents=[on], help="the project's invite links and their state")
    isub.add_parser("revoke", parents=[on], help="stop an invite link").add_argument("id", type=int)


def _project_edit(args) -> int:
    from . import service
    from .cli import _session

    with _session(args) as s:
        members_only = None if args.members_only is None else YES_NO[args.members_only]
        p = service.update_project(s, args.name, name=args.rename, per_item=args.per_item, gold_rate=args.gold_rate,
                                   timeout_minutes=args.timeout_minutes, instructions=args.instructions,
                                   members_only=members_only)
        print(f"project {p.name!r}: {p.per_item} annotator(s) per item, gold rate {p.gold_rate}, items expire after "
              f"{p.timeout_minutes} min, {'members only' if p.members_only else 'open to every annotator'}")
    return 0


def _archive(args, archived: bool) -> int:
    from . import service
    from .cli import _session

    with _session(args) as s:
        p = service.set_archived(s, args.name, archived)
        print(f"project {p.name!r} is {'archived' if archived else 'restored'}")
    return 0


def _member(args) -> int:
    from . import service
    from .cli import _session

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
    from .cli import _session

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


COMMANDS = {
    "project_edit": _project_edit, "project_archive": lambda a: _archive(a, True),
    "project_restore": lambda a: _archive(a, False), "member_add": _member, "member_remove": _member,
    "member_list": _member, "invite_create": _invite, "invite_list": _invite, "invite_revoke": _invite,
}
