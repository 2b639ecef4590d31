"""`c2seg admin` verbs about teams: add one (its token), list them, revoke or rotate a token,
members, disqualify and reinstate. Like every admin verb they talk to the database directly (and
upgrade it first), and import the server's libraries inside the commands.
"""

from __future__ import annotations

import json

import click

from c2seg_kit.text import for_terminal as safe

from .admin_db import open_db, run_verb, user_error


@click.command("add-team")
@click.argument("name")
@click.option("--baseline", is_flag=True, help="mark the team's rows as baseline results on the board")
@click.pass_context
def add_team(ctx, name, baseline):
    """Add a team; prints its token, alone, on stdout (shown once: only a hash is stored)."""
    from . import crud

    name = user_error(crud.check_team_name, name)  # before the database is opened (or made)
    _, sessions = open_db(ctx, create=True)
    with sessions() as s:
        team, token = user_error(lambda: crud.add_team(s, name, baseline=baseline))
    click.echo(f"added team {team.name!r}{' (baseline)' if baseline else ''}; its token follows, shown once", err=True)
    click.echo(token)


@click.command("list-teams")
@click.option("--json", "as_json", is_flag=True, help="one JSON array")
@click.pass_context
def list_teams(ctx, as_json):
    """List teams: name, baseline flag, created, revoked, submissions, and the leak budget: per
    track, the public answers the team got in the current phase, how many distinct ones, and an
    upper bound in bits on what they can reveal about the hidden labels (see --leak-cap-bits of
    `c2seg serve`), and the track's mode when it is a Ladder (ladder: fixed step; ladder-auto:
    parameter-free, its values on a 0.001 grid)."""
    from . import crud, ladder, phases

    _, sessions = open_db(ctx)
    with sessions() as s:
        tracks = sorted({sub.track for t in crud.list_teams(s) for sub in t.submissions})
        policy = {tr: ladder.read_policy(s, tr) for tr in tracks}
        since = {tr: phases.state(s, tr).since for tr in tracks}
        rows = []
        for t in crud.list_teams(s):
            leak = {}
            for tr in sorted({sub.track for sub in t.submissions}):
                a = ladder.team_answers(s, t.id, tr, policy[tr], since=since[tr])
                leak[tr] = {"mode": policy[tr].mode, "answers": a.answers,
                            "distinct": a.distinct,
                            "bits": round(a.bits, 1), "cap_bits": policy[tr].leak_cap_bits}
            rows.append({"name": t.name, "baseline": t.is_baseline, "created": t.created.isoformat(),
                         "revoked": t.revoked.isoformat() if t.revoked else None,
                         "disqualified": t.disqualified_reason if t.disqualified else None,
                         "members": len(t.members), "submissions": len(t.submissions), "leak": leak})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'team':<30} {'baseline':>8} {'subs':>5}  {'created':<20} {'revoked':<20} {'disqualified':<14} "
               "leak (track: answers, distinct, bits[/cap] this phase [(ladder mode)])")
    for r in rows:
        leak = "; ".join(f"{tr}: {v['answers']}, {v['distinct']}, {v['bits']:g}" + (f"/{v['cap_bits']:g}" if v["cap_bits"] else "")
                         + (f" ({v['mode']})" if v["mode"] != "exact" else "") for tr, v in r["leak"].items())
        click.echo(f"{safe(r['name'])[:30]:<30} {'yes' if r['baseline'] else '':>8} {r['submissions']:>5}  "
                   f"{r['created'][:19]:<20} {(r['revoked'] or '')[:19]:<20} {safe(r['disqualified'])[:14]:<14} {leak}")


@click.command()
@click.argument("team")
@click.pass_context
def revoke(ctx, team):
    """Revoke TEAM's token: it is refused from now on (its submissions stay on the board)."""
    from . import crud

    _, sessions = open_db(ctx)
    with sessions() as s:
        user_error(crud.revoke_team, s, team)
    click.echo(f"revoked the token of team {team!r}", err=True)


@click.command("rotate-token")
@click.argument("team")
@click.pass_context
def rotate_token(ctx, team):
    """Give TEAM a new token, printed alone on stdout (shown once); the old one stops working now.
    It also lifts a `revoke`."""
    from . import organizer

    token = run_verb(ctx, organizer.rotate_token, team)
    click.echo(f"new token for team {team!r} follows, shown once; the old one no longer works", err=True)
    click.echo(token)


@click.command()
@click.argument("team")
@click.option("--name", help="the member's name")
@click.option("--email", required=True, help="the member's e-mail address (one member per address)")
@click.option("--affiliation", help="university, company, ...")
@click.option("--remove", is_flag=True, help="remove the member with this e-mail address instead")
@click.pass_context
def member(ctx, team, name, email, affiliation, remove):
    """Add a member to TEAM (or update the one with this e-mail). Kept for the organizers only."""
    from . import organizer

    if remove:
        run_verb(ctx, organizer.remove_member, team, email)
        click.echo(f"removed {email} from team {team!r}", err=True)
        return
    if not name:
        raise click.UsageError("--name is required (or give --remove)")
    m = run_verb(ctx, organizer.add_member, team, name, email, affiliation)
    click.echo(f"team {team!r}: member {safe(m.name)} <{safe(m.email)}>" + (f", {safe(m.affiliation)}" if m.affiliation else ""),
               err=True)


@click.command()
@click.argument("team", required=False)
@click.option("--json", "as_json", is_flag=True, help="one JSON array")
@click.pass_context
def members(ctx, team, as_json):
    """List team members (of TEAM, or of every team)."""
    from . import organizer

    rows = [{"team": m.team.name, "name": m.name, "email": m.email, "affiliation": m.affiliation}
            for m in run_verb(ctx, organizer.members, team)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{safe(r['team'])[:30]:<30} {safe(r['name'])[:30]:<30} {safe(r['email']):<32} {safe(r['affiliation'])}")


@click.command()
@click.argument("team")
@click.option("--reason", required=True, help="why (kept with the team, shown to it by `c2seg me`; one line)")
@click.pass_context
def disqualify(ctx, team, reason):
    """Take TEAM off the board and refuse its submissions; everything is kept, with the reason."""
    from . import organizer

    run_verb(ctx, organizer.disqualify, team, reason)
    click.echo(f"disqualified team {team!r}", err=True)


@click.command()
@click.argument("team")
@click.pass_context
def reinstate(ctx, team):
    """Undo `disqualify`: TEAM is back on the board and may submit again."""
    from . import organizer

    run_verb(ctx, organizer.reinstate, team)
    click.echo(f"reinstated team {team!r}", err=True)


#: The verbs of this module, added to `c2seg admin` by cli.py.
VERBS = (add_team, list_teams, revoke, rotate_token, member, members, disqualify, reinstate)
