"""Keys and backups: ``key status|rotate``, ``backup`` and ``restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, open_app, settings

key_app = typer.Typer(no_args_is_help=True, help="The template key: status and rotation.")


@key_app.command("status")
def key_status(as_json: JsonOpt = False) -> None:
    """The configured key's id, the keys the data is under, and faces per key."""
    with open_app() as (fw, actor):
        data = fw.keys.status(actor)
    if as_json:
        output.emit_json(data)
        return
    output.out.print(f"configured key: {data['configured_key']} ({data['key_source']})")
    for key in data["keys"]:
        when = f" {key['retired_at']}" if key["retired_at"] else ""
        faces = data["faces"].get(key["key_id"], 0)
        output.out.print(f"key {key['key_id']}: {key['state']}{when}; {faces} faces")


@key_app.command("rotate")
def key_rotate() -> None:
    """Re-encrypt every template, crop, kept probe and suppression entry under a new key.

    Resumable: after a crash, run it again. Stop the server first (a running server holds
    the old key and refuses to write once the rotation has begun)."""

    def progress(line: str) -> None:
        print(line, flush=True)

    with open_app() as (fw, actor):
        report = fw.keys.rotate(actor, progress)
        key_file = fw.settings.resolved_key_file
    output.out.print(
        f"key rotated: {report['old_key']} -> [bold]{report['new_key']}[/] "
        f"({report['faces']} faces, {report['crops']} crops re-encrypted); "
        f"back up the new key file {key_file} now"
    )


def backup(
    dest: Annotated[Path, typer.Argument(help="New or empty folder for the snapshot.")],
    with_key: Annotated[
        bool,
        typer.Option(
            "--with-key", help="Also copy the template and audit keys (keep them apart!)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a consistent snapshot of the database (SQLite), safe while the server runs."""
    with open_app() as (fw, actor):
        manifest = fw.backups.backup(actor, dest, with_key=with_key)
    if with_key:
        output.err.print(
            "[yellow]warning[/]: the backup holds the template key: whoever has it can read "
            "every template; store it apart from ordinary backups"
        )
    if as_json:
        output.emit_json(manifest)
    else:
        c = manifest["counts"]
        output.out.print(
            f"backup written to {escape(str(dest))}: {c['media']} media, {c['faces']} faces, "
            f"{c['audit_events']} audit records (head #{manifest['audit_head']['seq']})"
            + ("" if with_key else "; the template key was not copied")
        )


def restore(
    src: Annotated[Path, typer.Argument(help="A folder written by 'facewarden backup'.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the data directory's database.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a backup (checksum, audit chain, counts, key) and install it."""
    from facewarden.services.backup import restore as restore_backup

    report = restore_backup(settings(), src, force=force)
    if as_json:
        output.emit_json(report)
    else:
        c = report["counts"]
        output.out.print(
            f"restored and checked: {c['media']} media, {c['faces']} faces, "
            f"{c['audit_events']} audit records; the index is rebuilt on first use"
        )
