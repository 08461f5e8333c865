"""Data subjects' rights: ``subject access|erase|review|list|receipts``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, open_app, read_bytes
from facewarden.core.errors import InvalidInput
from facewarden.core.limits import RECEIPT_KINDS, RECEIPTS_PAGE, RECEIPTS_PAGE_MAX

subject_app = typer.Typer(no_args_is_help=True, help="Data subjects' rights: access and erasure.")


@subject_app.command("access")
def subject_access(
    selfie: Annotated[
        Path | None, typer.Argument(help="Photo of the requester (used once).")
    ] = None,
    reference: Annotated[str | None, typer.Option(help="Request reference.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Distance (default FACEWARDEN_SUBJECT_THRESHOLD).")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Also write the report as HTML.")] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject", help="A subject reference (ingest manifest) instead of a selfie."
        ),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="The subject's source (when several have it).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Export the report as JSON to this file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Report everything held about the person in SELFIE, or about a subject of the source
    system (--subject), for human review before sending."""
    with open_app() as (fw, actor):
        if (selfie is None) == (subject is None):
            raise InvalidInput("give a selfie or --subject REF (one of them)")
        if selfie is not None:
            report = fw.subjects.access(
                actor, read_bytes(selfie), reference=reference, threshold=threshold
            )
        elif subject is not None:
            report = fw.subject_records.access(actor, subject, source=source)
        page = fw.subjects.report_html(report) if html else None
    if out:
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if html and page is not None:
        html.write_text(page)
    if as_json:
        output.emit_json(report)
        return
    output.show_subject_matches(report["matches"])
    output.out.print(f"request {report['request_id']} logged as audit #{report['audit_seq']}")
    if html:
        output.out.print(f"HTML report: {html}")


@subject_app.command("erase")
def subject_erase(
    selfie: Annotated[
        list[Path] | None,
        typer.Argument(help="Photo(s) of the requester (used once, not kept)."),
    ] = None,
    reference: Annotated[str | None, typer.Option(help="Request reference.")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Strict distance (default FACEWARDEN_SUBJECT_THRESHOLD)."),
    ] = None,
    face: Annotated[
        list[int] | None, typer.Option("--face", help="Erase only these reviewed candidates.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    subject: Annotated[
        str | None,
        typer.Option("--subject", help="Erase every face of this subject (manifest reference)."),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="The subject's source (when several have it).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the candidates (every face a search of the selfie would return), erase the ones
    within the strict threshold, suppress the person from later ingest and search, and print
    a receipt listing the candidates left for review (`subject review`). With --subject:
    every face the source system linked to the subject."""
    with open_app() as (fw, actor):
        if (not selfie) == (subject is None):
            raise InvalidInput("give a selfie or --subject REF (one of them)")
        if subject is not None:
            if not yes and not (
                sys.stdin.isatty() and typer.confirm(f"Erase every face of subject {subject}?")
            ):
                raise InvalidInput("erasure not confirmed (use --yes)")
            receipt = fw.subject_records.erase(actor, subject, source=source)
        else:
            data = [read_bytes(s) for s in selfie or []]
            if not yes:
                matches = fw.subjects.erase_preview(actor, data, threshold=threshold)
                output.show_subject_matches(matches)
                if not (sys.stdin.isatty() and typer.confirm("Erase these faces?")):
                    raise InvalidInput("erasure not confirmed (use --yes)")
            receipt = fw.subjects.erase(
                actor, data, reference=reference, threshold=threshold, face_ids=face
            )
    output.emit_json(receipt) if as_json else output.show_mapping("erasure receipt", receipt)


@subject_app.command("review")
def subject_review(
    request_id: Annotated[int, typer.Argument(help="The erasure request (its receipt's id).")],
    erase: Annotated[
        list[int] | None, typer.Option("--erase", help="A review candidate that is the requester.")
    ] = None,
    release: Annotated[
        list[int] | None,
        typer.Option("--release", help="A review candidate that is someone else."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide an erasure's review candidates: erase them too, or release them to search."""
    with open_app() as (fw, actor):
        receipt = fw.subjects.review(actor, request_id, erase=erase or [], release=release or [])
    output.emit_json(receipt) if as_json else output.show_mapping("review receipt", receipt)


@subject_app.command("list")
def subject_list(as_json: JsonOpt = False) -> None:
    """Rights requests with their dates and time to completion."""
    with open_app() as (fw, actor):
        rows = fw.subjects.requests(actor)
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        output.out.print(
            f"#{r['id']} {r['kind']} {r['reference'] or ''}: {r['faces']} faces, "
            f"received {r['received_at']}, done in {r['seconds_to_complete']} s"
        )


@subject_app.command("receipts")
def subject_receipts(
    limit: Annotated[
        int, typer.Option(help=f"Receipts per page (1 to {RECEIPTS_PAGE_MAX}).")
    ] = RECEIPTS_PAGE,
    before_seq: Annotated[
        int | None,
        typer.Option(help="Older than this audit record: the 'next' of the previous page."),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help=f"Only this kind: {', '.join(RECEIPT_KINDS)}.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Only references or subjects containing this.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Access, erasure, restriction and physical purge receipts, newest first, a page at a
    time (dpo, auditor)."""
    with open_app() as (fw, actor):
        page = fw.subjects.receipts(
            actor, limit=limit, before_seq=before_seq, kind=kind, reference=reference
        )
    if as_json:
        output.emit_json(page)
        return
    output.show_receipts(page["receipts"])
    if page["next"] is not None:
        output.out.print(f"older receipts: --before-seq {page['next']}")
