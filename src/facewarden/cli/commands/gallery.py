"""The gallery: ``stats``, ``delete``, ``purge``, ``media restrict``, ``retention run`` and
``index ...``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, open_app
from facewarden.core.errors import FacewardenError, InvalidInput

index_app = typer.Typer(no_args_is_help=True, help="Maintain the derived vector index.")
media_app = typer.Typer(no_args_is_help=True, help="Restrict media from search.")
retention_app = typer.Typer(no_args_is_help=True, help="Retention: purge what has expired.")


def stats(as_json: JsonOpt = False) -> None:
    """Counts of sources, media, faces, index size and model."""
    with open_app() as (fw, _):
        data = fw.stats()
    output.emit_json(data) if as_json else output.show_mapping("facewarden", data)


def delete(
    media: Annotated[
        list[int] | None, typer.Option("--media", help="Media id (repeatable).")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Delete a whole source.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete media (faces, templates, crops, index entries) or a whole source."""
    if bool(media) == bool(source):
        raise InvalidInput("give either --media ID... or --source NAME")
    with open_app() as (fw, actor):
        what = f"source {source!r} and all its media" if source else f"media {media}"
        if not yes and not (sys.stdin.isatty() and typer.confirm(f"Delete {what}?")):
            raise InvalidInput("deletion not confirmed (use --yes)")
        counts = (
            fw.gallery.delete_source(actor, source)
            if source
            else fw.gallery.delete_media(actor, media or [])
        )
    output.out.print(
        f"deleted {counts['media']} media, {counts['faces']} faces, {counts['crops']} crops"
    )


def purge(
    jurisdiction: Annotated[str | None, typer.Option(help="ISO country code.")] = None,
    source: Annotated[str | None, typer.Option(help="Source name.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete everything of one jurisdiction or source, with a receipt and counts."""
    with open_app() as (fw, actor):
        what = f"jurisdiction {jurisdiction}" if jurisdiction else f"source {source}"
        if not yes and not (sys.stdin.isatty() and typer.confirm(f"Purge all media of {what}?")):
            raise InvalidInput("purge not confirmed (use --yes)")
        receipt = fw.gallery.purge(actor, jurisdiction=jurisdiction, source=source)
    output.emit_json(receipt) if as_json else output.show_mapping("purge receipt", receipt)


@media_app.command("restrict")
def media_restrict(
    media_id: Annotated[int | None, typer.Argument(help="Media id.")] = None,
    lift: Annotated[bool, typer.Option("--lift", help="Lift the restriction.")] = False,
    subject: Annotated[
        str | None,
        typer.Option("--subject", help="Every media of this subject (manifest reference)."),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="The subject's source (when several have it).")
    ] = None,
) -> None:
    """Keep a media record but exclude it from every search."""
    with open_app() as (fw, actor):
        if subject is not None:
            if media_id is not None:
                raise InvalidInput("give a media id or --subject, not both")
            done = fw.subject_records.restrict(actor, subject, source=source, restricted=not lift)
            output.out.print(
                f"subject {subject} ({done['source']}): {len(done['media'])} media "
                f"{'no longer ' if lift else ''}restricted"
            )
            return
        if media_id is None:
            raise InvalidInput("give a media id or --subject REF")
        fw.gallery.restrict(actor, media_id, restricted=not lift)
    output.out.print(f"media {media_id} {'no longer ' if lift else ''}restricted")


@retention_app.command("run")
def retention_run(as_json: JsonOpt = False) -> None:
    """Delete every media past its retention date, with a receipt."""
    with open_app() as (fw, actor):
        receipt = fw.gallery.retention_run(actor)
    output.emit_json(receipt) if as_json else output.show_mapping("retention run", receipt)


@index_app.command("rebuild")
def index_rebuild() -> None:
    """Rebuild the vector index from the database (the source of truth)."""
    with open_app() as (fw, actor):
        res = fw.gallery.rebuild_index(actor)
    output.out.print(f"index rebuilt: {res['faces']} faces")


@index_app.command("info")
def index_info(as_json: JsonOpt = False) -> None:
    """The configured index backend, its mode and size."""
    with open_app() as (fw, _):
        info = fw.index.describe()
    if as_json:
        output.emit_json(info)
    else:
        for key, value in info.items():
            output.out.print(f"{key}: {value}")


@index_app.command("purge")
def index_purge(as_json: JsonOpt = False) -> None:
    """Physically erase deleted templates (FAISS: fsync and compact; pgvector: VACUUM FULL;
    Qdrant: vacuum; the database: WAL checkpoint or VACUUM); logged as ``index.purge`` with
    the deletions it covers."""
    with open_app() as (fw, actor):
        report = fw.gallery.purge_index(actor)
    if report is None:  # only with only_if_pending=True, which the command does not pass
        raise FacewardenError("the index purge returned no report", code="internal")
    if as_json:
        output.emit_json(report)
    else:
        output.out.print(
            f"purged {report['removed_since_last_purge']} removed vectors at "
            f"{report['purged_at']}: " + "; ".join(report["actions"])
        )
        covered = report["covers_audit_seqs"]
        output.out.print(f"covers {len(covered)} deletions (audit records {covered})")


@index_app.command("migrate")
def index_migrate(
    to: Annotated[str, typer.Option("--to", help="faiss, pgvector or qdrant.")],
    as_json: JsonOpt = False,
) -> None:
    """Copy the gallery's templates into another index backend (no re-embedding)."""
    with open_app() as (fw, actor):
        res = fw.gallery.migrate_index(actor, to)
    if as_json:
        output.emit_json(res)
    else:
        output.out.print(
            f"{res['faces']} faces copied into {res['to']}; "
            f"set FACEWARDEN_INDEX={res['to']} to use it"
        )
