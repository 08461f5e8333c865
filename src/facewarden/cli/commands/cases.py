"""Cases and two-person review: ``case ...``, ``confirm`` and ``reject``."""

from __future__ import annotations

from typing import Annotated

import typer

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, open_app

case_app = typer.Typer(no_args_is_help=True, help="Open, close and inspect cases.")

NoteOpt = Annotated[str | None, typer.Option(help="Why (kept in the record).")]


@case_app.command("open")
def case_open(
    ref: str,
    purpose: Annotated[str, typer.Option(help="Purpose of the searches.")] = "",
    legal_basis: Annotated[str, typer.Option(help="Legal basis.")] = "",
    authorisation: Annotated[str, typer.Option(help="Authorisation reference.")] = "",
    offence: Annotated[str | None, typer.Option(help="Offence under investigation.")] = None,
    expires: Annotated[str, typer.Option(help="Case lifetime, e.g. 30d.")] = "30d",
    investigator: Annotated[
        list[str] | None,
        typer.Option("--investigator", help="Assign an investigator (repeatable)."),
    ] = None,
    quota: Annotated[
        int | None, typer.Option(help="Searches allowed (default FACEWARDEN_CASE_SEARCH_QUOTA).")
    ] = None,
    keep_probe_templates: Annotated[
        bool,
        typer.Option(help="Keep probe templates (encrypted) while the case lives."),
    ] = False,
    threshold_policy: Annotated[
        str | None,
        typer.Option(
            help="fixed (distance threshold) or fpir (by target FPIR at the gallery's size); "
            "default FACEWARDEN_THRESHOLD_POLICY."
        ),
    ] = None,
    target_fpir: Annotated[
        float | None,
        typer.Option(
            help="Target false positive identification rate, e.g. 0.01 (sets the fpir policy)."
        ),
    ] = None,
) -> None:
    """Open a case; searches must name an open case they are assigned to."""
    with open_app() as (fw, actor):
        info = fw.cases.open(
            actor,
            ref,
            purpose=purpose,
            legal_basis=legal_basis,
            authorisation=authorisation,
            offence=offence,
            expires=expires,
            investigators=investigator,
            quota=quota,
            keep_probe_templates=keep_probe_templates,
            threshold_policy=threshold_policy,
            target_fpir=target_fpir,
        )
        output.out.print(
            f"case [bold]{info.ref}[/] open until {info.expires_at:%Y-%m-%d %H:%M} UTC; "
            f"investigators {', '.join(info.investigators)}; quota {info.search_quota} searches"
            + (
                f"; threshold by target FPIR {info.target_fpir or fw.settings.target_fpir}"
                if info.threshold_policy == "fpir"
                else ""
            )
        )


@case_app.command("assign")
def case_assign(
    ref: str,
    user: str,
    remove: Annotated[bool, typer.Option("--remove", help="Unassign instead.")] = False,
) -> None:
    """Assign an investigator or a reviewer to a case (its opener or an admin may)."""
    with open_app() as (fw, actor):
        info = fw.cases.assign(actor, ref, user, remove=remove)
    output.out.print(
        f"case {ref} investigators: {', '.join(info.investigators) or '(none)'}; "
        f"reviewers: {', '.join(info.reviewers) or '(none)'}"
    )


@case_app.command("candidates")
def case_candidates(ref: str, as_json: JsonOpt = False) -> None:
    """Candidates of a case that someone confirmed or rejected, with their state."""
    with open_app() as (fw, actor):
        rows = [s.as_dict() for s in fw.confirmations.candidates(actor, ref)]
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        who = ", ".join(f"{d['user']} {d['decision']}ed" for d in r["decisions"])
        output.out.print(f"search {r['search_id']} face {r['face_id']}: {r['status']} ({who})")


@case_app.command("export")
def case_export(
    ref: str,
    search: Annotated[int | None, typer.Option(help="Only this search.")] = None,
    face: Annotated[int | None, typer.Option(help="Only this candidate face.")] = None,
) -> None:
    """Export the identifications of a case (two-person confirmed candidates only) as JSON."""
    with open_app() as (fw, actor):
        rows = fw.confirmations.export(actor, ref, search_id=search, face_id=face)
    output.emit_json(rows)


def _decide(search_id: int, face_id: int, decision: str, note: str | None, as_json: bool) -> None:
    with open_app() as (fw, actor):
        state = fw.confirmations.decide(actor, search_id, face_id, decision, note)
    if as_json:
        output.emit_json(state.as_dict())
        return
    output.out.print(
        f"search {search_id} face {face_id}: [bold]{state.status}[/] "
        f"({len(state.decisions)} decision(s))"
    )


def confirm(search_id: int, face_id: int, note: NoteOpt = None, as_json: JsonOpt = False) -> None:
    """Confirm a candidate. Two different people (investigator, reviewer) identify."""
    _decide(search_id, face_id, "confirm", note, as_json)


def reject(search_id: int, face_id: int, note: NoteOpt = None, as_json: JsonOpt = False) -> None:
    """Reject a candidate: it can no longer become an identification."""
    _decide(search_id, face_id, "reject", note, as_json)


@case_app.command("close")
def case_close(ref: str) -> None:
    """Close a case: no further searches under it."""
    with open_app() as (fw, actor):
        fw.cases.close(actor, ref)
    output.out.print(f"case {ref} closed")


@case_app.command("show")
def case_show(ref: str, as_json: JsonOpt = False) -> None:
    """Show a case."""
    with open_app() as (fw, actor):
        data = fw.cases.show(actor, ref).as_dict()
    output.emit_json(data) if as_json else output.show_mapping(f"case {ref}", data)


@case_app.command("list")
def case_list(as_json: JsonOpt = False) -> None:
    """List cases."""
    with open_app() as (fw, actor):
        rows = [c.as_dict() for c in fw.cases.list(actor)]
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        output.out.print(f"{r['ref']}: {r['status']}, expires {r['expires_at']}; {r['purpose']}")
