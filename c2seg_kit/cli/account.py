"""A team's own account on a scoring server: `c2seg me` and `c2seg submissions` (list, select, edit).

Light like the other participant verbs (httpx only). Every time is printed in UTC.
"""

from __future__ import annotations

import json

import click

from c2seg_kit.cli.options import format_score, track_option
from c2seg_kit.cli.participant import metadata_options, server_options
from c2seg_kit.errors import C2SegError
from c2seg_kit.text import for_terminal as safe


def utc(value: str | None) -> str:
    """An ISO time from the server as `YYYY-MM-DD HH:MM UTC`."""
    if not value:
        return "-"
    return safe(value.replace("T", " ")[:16]) + " UTC"


def phase_line(q: dict) -> str:
    if q.get("phase_ends"):
        return f"{safe(q['phase'])} until {utc(q['phase_ends'])} (then {safe(q.get('next_phase'))})"
    return f"{safe(q['phase'])} (no change scheduled)"


@click.command()
@server_options
@click.option("--json", "as_json", is_flag=True, help="print the server's answer as one JSON object")
def me(server, token, as_json):
    """Your team: quota used and left per track, when it resets (UTC), each track's phase and
    when it ends, and your final picks."""
    from c2seg_kit import client

    info = client.me(server=server, token=token)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"team {safe(info['team'])}" + (" (baseline)" if info.get("baseline") else ""))
    if info.get("disqualified"):
        click.echo(f"  DISQUALIFIED: {safe(info['disqualified'])}")
    for q in info["quota"]:
        click.echo(f"track {safe(q['track'])}: {phase_line(q)}")
        click.echo(f"  today:      {q['used_today']} used, {q['left_today']} left; resets at {utc(q['resets'])}")
        if q.get("phase_cap") is not None:
            click.echo(f"  this phase: {q['used_phase']} of {q['phase_cap']} used, {q['left_phase']} left")
        picks = ", ".join(map(str, q.get("final_picks") or [])) or "none (your best public submission counts)"
        click.echo(f"  final picks: {picks} (at most {q.get('final_picks_max')})")
    click.echo(f"refused uploads today: {info['failed_today']} ({info['failed_left_today']} left)")


def _counts(sub: dict) -> str:
    marks = (["final pick"] if sub.get("final_pick") else []) + (["best public"] if sub.get("best_public") else [])
    if sub.get("private_candidate") and not sub.get("final_pick"):
        marks.append("counts for private")
    return ", ".join(marks)


@click.group(invoke_without_command=True)
@server_options
@track_option(required=False, help="only this track")
@click.option("--json", "as_json", is_flag=True, help="print the server's list as one JSON array")
@click.pass_context
def submissions(ctx, server, token, track, as_json):
    """Your team's submissions: id, time, status, public scores, metadata and final picks.

    With no verb, lists them. `select ID [ID ...]` chooses the final picks for the private
    ranking; `edit ID` changes a submission's method, description or URL.
    """
    ctx.obj = {"server": server, "token": token}
    if ctx.invoked_subcommand is not None:
        return
    from c2seg_kit import client

    subs = client.my_submissions(server=server, token=token, track=track)
    if as_json:
        click.echo(json.dumps(subs))
        return
    if not subs:
        click.echo("no submissions yet")
        return
    click.echo(f"{'id':>6}  {'made at (UTC)':<16}  {'track':<5} {'status':<6} {'mIoU':>7} {'OA':>7}  "
               f"{'method':<24} counts")
    for sub in subs:
        sc = sub["scores"]
        click.echo(f"{sub['id']:>6}  {utc(sub['created'])[:16]:<16}  {safe(sub['track']):<5} "
                   f"{safe(sub.get('status', 'scored')):<6} {format_score(sc['miou']):>7} {format_score(sc['oa']):>7}  "
                   f"{safe(sub.get('method'))[:24]:<24} {_counts(sub)}"
                   + (f" [model: {safe(sub['model'].get('kind'))}]" if sub.get("model") else ""))


def _from(ctx, server, token) -> dict:
    """Options given to the verb win over those given to the group (`c2seg submissions --server URL
    select 3`); both read the same C2SEG_* variables and default, so the group's value stands otherwise."""
    given = ctx.get_parameter_source("server") == click.core.ParameterSource.COMMANDLINE
    return {"server": server if given else ctx.obj["server"], "token": token or ctx.obj["token"]}


@submissions.command()
@click.argument("ids", nargs=-1, type=click.IntRange(1, 2**31 - 1))
@track_option(required=False, help="the track to pick on (needed to clear the picks: give no ID)")
@server_options
@click.pass_context
def select(ctx, ids, track, server, token):
    """Make IDS your final picks for the private ranking (replacing earlier picks on their
    track). With no ID and --track, clear that track's picks. Picking closes with the open phase.

    The private ranking uses the best of your picks; with none, your best public submission.
    """
    from c2seg_kit import client

    where = _from(ctx, server, token)
    if not ids and not track:
        raise click.UsageError("give the submission IDs to pick, or --track with no ID to clear the picks")
    mine = {s["id"]: s["track"] for s in client.my_submissions(**where)}
    for i in ids:
        if i not in mine:
            raise C2SegError(f"you have no submission {i}")
        if track and mine[i] != track:
            raise C2SegError(f"submission {i} is on track {mine[i]}, not {track}")
    by_track: dict[str, list[int]] = {track: []} if track else {}
    for i in ids:
        by_track.setdefault(mine[i], []).append(i)
    for t, chosen in sorted(by_track.items()):
        out = client.set_final_picks(t, chosen, **where)
        picked = ", ".join(map(str, out["ids"])) or "none (your best public submission counts)"
        closes = f"; picking closes at {utc(out['closes'])}" if out.get("closes") else ""
        click.echo(f"track {safe(t)}: final picks {picked} (at most {out['max']}){closes}")


@submissions.command()
@click.argument("submission_id", type=click.IntRange(1, 2**31 - 1))
@metadata_options()
@click.option("--clear", "clear", multiple=True, type=click.Choice(["method", "description", "url"]),
              help="remove this field (repeatable)")
@server_options
@click.pass_context
def edit(ctx, submission_id, method, description, url, clear, server, token):
    """Change the method, description or URL shown for one of your submissions."""
    from c2seg_kit import client, text

    fields = {k: v for k, v in (("method", method), ("description", client.normalise_newlines(description)),
                                ("url", url)) if v is not None}
    fields.update(dict.fromkeys(clear))
    if not fields:
        raise click.UsageError("nothing to change: give --method, --description, --url or --clear")
    try:
        text.check_metadata(**{k: v for k, v in fields.items() if v is not None})
    except ValueError as e:
        raise C2SegError(str(e)) from None
    out = client.edit_submission(submission_id, fields, **_from(ctx, server, token))
    click.echo(f"submission {out['id']}: method {safe(out.get('method')) or '-'}; url {safe(out.get('url')) or '-'}; "
               f"description {'set' if out.get('description') else '-'}")
