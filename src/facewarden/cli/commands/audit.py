"""Oversight: ``audit anchor|verify|export``, ``report`` and ``notice``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, open_app, open_core, read_bytes
from facewarden.core.errors import InvalidInput

audit_app = typer.Typer(no_args_is_help=True, help="Verify and export the audit log.")


@audit_app.command("anchor")
def audit_anchor(
    out: Annotated[
        Path | None, typer.Option(help="Append the anchor to this file (JSON lines).")
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Start a new automatic anchor file after the old one was lost (logged).",
        ),
    ] = False,
) -> None:
    """Print the newest record's sequence number and hash; keep it outside the database."""
    with open_app() as (fw, actor):
        if restart:
            anchor = fw.oversight.restart_anchors(actor)
            output.out.print(f"new anchor file {fw.settings.resolved_anchor_file} started")
            print(json.dumps(anchor))
            return
        line = json.dumps(fw.oversight.head(actor))
    if out:
        with out.open("a") as fh:
            fh.write(line + "\n")
    print(line)


def _read_anchors(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(x) for x in read_bytes(path).decode().splitlines() if x.strip()]
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not a file of audit anchors (JSON lines)") from exc


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[
        Path | None, typer.Option(help="Anchors file from 'audit anchor --out' (truncation).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the chain (MAC under the audit key) and the anchors (the automatic anchor file
    and ``--anchor``); exits 1 and names the first bad record if it was tampered with."""
    with open_app() as (fw, actor):
        report = fw.oversight.verify(actor, _read_anchors(anchor) if anchor else None)
    if as_json:
        output.emit_json(report)
    elif report["ok"]:
        output.out.print(f"[green]audit chain intact[/]: {report['records']} records")
    else:
        where = f"at record {report['first_bad_seq']}" if report["first_bad_seq"] else "(anchors)"
        output.err.print(f"[red]audit chain broken {where}[/]: {escape(report['reason'])}")
    if not report["ok"]:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    case: Annotated[str | None, typer.Option(help="Only this case.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only events since (ISO date).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
) -> None:
    """Export audit events to stdout."""
    with open_app() as (fw, actor):
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        sys.stdout.write(fw.oversight.export(actor, fmt, case_ref=case, since=since))


def report(as_json: JsonOpt = False) -> None:
    """Records of processing: holdings, searches and identifications, rights requests."""
    with open_app() as (fw, actor):
        data = fw.records.report(actor)
    if as_json:
        output.emit_json(data)
        return
    output.show_report(data)


def notice() -> None:
    """Print the public processing notice (Markdown) from configuration and sources."""
    with open_core() as fw:
        text = fw.records.notice()
    print(text)
