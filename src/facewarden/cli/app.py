"""The ``facewarden`` command line: a thin layer over the core service (``Facewarden``)."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facewarden.cli import output
from facewarden.cli.evaluate import eval_app
from facewarden.cli.lazy import Lazy
from facewarden.core.actors import Actor
from facewarden.core.errors import FacewardenError, InvalidInput, Refused

if TYPE_CHECKING:
    from facewarden.adapters.index.base import IndexFilter
    from facewarden.adapters.storage.faults import storage_failure
    from facewarden.adapters.video import is_video_path
    from facewarden.cli.credentials import cli_actor, token_file, write_token_file
    from facewarden.config import Settings
    from facewarden.services.app import Facewarden
else:  # imported on first use: ``facewarden --help`` loads no database, model or video code
    IndexFilter = Lazy("facewarden.adapters.index.base", "IndexFilter")
    storage_failure = Lazy("facewarden.adapters.storage.faults", "storage_failure")
    is_video_path = Lazy("facewarden.adapters.video", "is_video_path")
    cli_actor = Lazy("facewarden.cli.credentials", "cli_actor")
    token_file = Lazy("facewarden.cli.credentials", "token_file")
    write_token_file = Lazy("facewarden.cli.credentials", "write_token_file")
    Settings = Lazy("facewarden.config", "Settings")
    Facewarden = Lazy("facewarden.services.app", "Facewarden")

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="facewarden: accountable face search over your own, lawfully held media.",
)


def _group(name: str, help: str) -> typer.Typer:
    """A sub-command group (``facewarden NAME ...``)."""
    group = typer.Typer(no_args_is_help=True, help=help)
    app.add_typer(group, name=name)
    return group


source_app = _group("source", "Register and list media sources.")
case_app = _group("case", "Open, close and inspect cases.")
index_app = _group("index", "Maintain the derived vector index.")
models_app = _group("models", "Convert dlib's networks to ONNX and show which runtime runs.")
audit_app = _group("audit", "Verify and export the audit log.")
user_app = _group("user", "Manage users and their API tokens.")
media_app = _group("media", "Restrict media from search.")
retention_app = _group("retention", "Retention: purge what has expired.")
subject_app = _group("subject", "Data subjects' rights: access and erasure.")
key_app = _group("key", "The template key: status and rotation.")
app.add_typer(eval_app, name="eval")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class State:
    data_dir: Path | None = None
    acting_as: str | None = None
    server: str | None = None


state = State()


@app.callback()
def _global(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (env FACEWARDEN_DATA_DIR).")
    ] = None,
    acting_as: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Refuse unless the credential (FACEWARDEN_TOKEN or the stored token) is "
            "this user's.",
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="FACEWARDEN_URL",
            help="Run the command on this facewarden server (its HTTP API) with your token.",
        ),
    ] = None,
) -> None:
    state.data_dir, state.acting_as, state.server = data_dir, acting_as, server


def settings(**overrides) -> Settings:
    if state.data_dir is not None:
        overrides["data_dir"] = state.data_dir
    return Settings(**overrides)


def open_app(**overrides) -> tuple[Facewarden, Actor]:
    """The core and the actor, authenticated by API token (see ``cli.credentials``); with
    ``--server``, a client of that server with the same methods (see ``cli.remote``)."""
    if state.server:
        from facewarden.cli.remote import open_remote

        return open_remote(state.server, state.acting_as)  # type: ignore[return-value]
    fw = Facewarden(settings(**overrides))
    try:
        actor, _ = cli_actor(fw, state.acting_as)
    except BaseException:
        fw.close()
        raise
    return fw, actor


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc


@app.command()
def init(admin: Annotated[str, typer.Option(help="Name of the first user.")] = "admin") -> None:
    """Create the data directory, database, template key and the first user."""
    s = settings()
    fw, token = Facewarden.init(s, admin_name=admin)
    output.out.print(f"facewarden data directory: {s.data_dir}")
    output.out.print(f"database: {fw.engine.url.render_as_string()}")
    output.out.print(
        "template key: "
        + (
            "from FACEWARDEN_TEMPLATE_KEY"
            if s.template_key
            else f"{s.resolved_key_file} (mode 0600)"
        )
        + f", id {fw.cipher.key_id}"
    )
    output.out.print(
        "audit key: "
        + (
            "from FACEWARDEN_AUDIT_KEY"
            if s.audit_key
            else f"{s.resolved_audit_key_file} (mode 0600)"
        )
        + f"; anchors: {s.resolved_anchor_file}"
    )
    output.out.print(
        "[bold]back up the key files now, separately from the data[/] "
        "(data encrypted under a lost key cannot be recovered)"
    )
    if token:
        path = token_file(s)
        write_token_file(path, token)
        output.out.print(
            f"first user [bold]{admin}[/] (admin, operator, investigator, dpo); "
            f"API token, shown once: [bold]{token}[/]"
        )
        output.out.print(f"stored for this OS account in {path} (mode 0600)")
    else:
        output.out.print("already initialised; schema is up to date")
    fw.close()


@source_app.command("add")
def source_add(
    name: str,
    lawful_basis: Annotated[str, typer.Option(help="Legal basis for processing these media.")] = "",
    purpose: Annotated[str, typer.Option(help="Why these media are held.")] = "",
    jurisdiction: Annotated[str, typer.Option(help="ISO 3166 two-letter country code.")] = "",
    retention: Annotated[str, typer.Option(help="How long media are kept, e.g. 365d.")] = "",
    note: Annotated[str | None, typer.Option(help="Free-text provenance note.")] = None,
    subject_field: Annotated[
        list[str] | None,
        typer.Option(
            "--subject-field",
            help="A metadata field an ingest manifest may record about this source's "
            "subjects (repeatable; only fields the source may lawfully hold).",
        ),
    ] = None,
) -> None:
    """Register a source. Lawful basis, purpose, jurisdiction and retention are mandatory."""
    fw, actor = open_app()
    info = fw.sources.add(
        actor,
        name,
        lawful_basis=lawful_basis,
        purpose=purpose,
        jurisdiction=jurisdiction,
        retention=retention,
        note=note,
        subject_fields=subject_field,
    )
    output.out.print(
        f"source [bold]{info.name}[/] registered ({info.jurisdiction}, "
        f"retention {info.retention_days:g} days)"
    )


@source_app.command("list")
def source_list(as_json: JsonOpt = False) -> None:
    """List sources with their media counts."""
    fw, _ = open_app()
    rows = [vars(s) for s in fw.sources.list()]
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        output.out.print(
            f"{r['name']}: {r['jurisdiction']}, {r['retention_days']:g}d, "
            f"{r['media']} media; basis: {r['lawful_basis']}; purpose: {r['purpose']}"
        )


def _progress(quiet: bool) -> Progress:
    """A progress bar on stderr (off with --json and in non-interactive CI)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=output.err,
        disable=quiet or (not output.err.is_terminal and "CI" in os.environ),
    )


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders and .zip archives.")],
    source: Annotated[str, typer.Option(help="Registered source name.")],
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: all cores).")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Process images in Ray actors: a cluster address, 'auto', or 'local' "
            "(--workers actors; default one per CPU of the cluster)."
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="CSV or JSON file mapping files to the source system's subject reference "
            "(and allowed metadata): faces of one subject are one gallery identity."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Detect, align, embed and store every face of the given local media."""
    fw, actor = open_app()
    with _progress(as_json) as bar:
        task = bar.add_task("ingesting", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(
                task, completed=done, total=total, description=f"ingesting {Path(label).name[:30]}"
            )

        summary = fw.ingest.run(
            actor,
            paths,
            source,
            workers=workers,
            progress=progress,
            ray=ray,
            manifest=manifest,
        )
    fw.close()
    if as_json:
        output.emit_json(summary.as_dict())
    else:
        output.show_ingest(summary)
    if summary.interrupted:
        raise typer.Exit(130)


@app.command()
def search(
    probe: Annotated[Path, typer.Argument(help="Probe image or video.")],
    case: Annotated[str, typer.Option(help="Case reference (required).")] = "",
    top: Annotated[int | None, typer.Option(help="Candidates per face.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Max Euclidean distance (default 0.6).")
    ] = None,
    fps: Annotated[
        float | None, typer.Option(help="Video: frames sampled per second (default 5).")
    ] = None,
    thumbnails: Annotated[
        Path | None, typer.Option(help="Video: write each track's best face crop here.")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option(help="Only candidates from this source (repeatable).")
    ] = None,
    jurisdiction: Annotated[
        list[str] | None,
        typer.Option(help="Only candidates of this jurisdiction (repeatable)."),
    ] = None,
    allow_low_quality: Annotated[
        bool,
        typer.Option(
            "--allow-low-quality",
            help="Search probe faces below the quality bar too (the override is logged).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search every face of a probe image, or every face track of a video, within a case.
    Probe faces below the quality bar (too small, blurred, profile) are not searched unless
    --allow-low-quality is given."""
    fw, actor = open_app()
    where = (
        IndexFilter(
            frozenset(source) if source else None,
            frozenset(j.upper() for j in jurisdiction) if jurisdiction else None,
        )
        if source or jurisdiction
        else None
    )
    if is_video_path(probe):
        if where is not None:
            raise InvalidInput("--source and --jurisdiction filter photo searches only")
        with _progress(as_json) as bar:
            task = bar.add_task(f"scanning {probe.name[:30]}", total=None)
            result = fw.video.search(
                actor,
                probe,
                case=case or None,
                fps=fps,
                top_k=top,
                threshold=threshold,
                progress=lambda t, d: bar.update(task, completed=t, total=d),
                allow_low_quality=allow_low_quality,
            )
        fw.close()
        if thumbnails is not None:
            output.write_thumbnails(result, thumbnails)
        output.emit_json(result.as_dict()) if as_json else output.show_video_search(result)
        return
    result = fw.search.search(
        actor,
        read_bytes(probe),
        case=case or None,
        probe_name=str(probe),
        top_k=top,
        threshold=threshold,
        where=where,
        allow_low_quality=allow_low_quality,
    )
    fw.close()
    output.emit_json(result.as_dict()) if as_json else output.show_search(result)


@app.command()
def redact(
    source: Annotated[Path, typer.Argument(help="Image or video to redact.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the redacted copy.")],
    keep: Annotated[
        list[int] | None,
        typer.Option("--keep", help="Gallery face id whose matches stay visible (repeatable)."),
    ] = None,
    case: Annotated[str | None, typer.Option(help="Case reference to log with.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Blur every face except those matching the kept gallery faces (for disclosure)."""
    fw, actor = open_app()
    with _progress(as_json or not is_video_path(source)) as bar:
        task = bar.add_task(f"redacting {source.name[:30]}", total=None)
        report = fw.redaction.redact(
            actor,
            source,
            keep or [],
            out,
            case=case,
            progress=lambda t, d: bar.update(task, completed=t, total=d),
        )
    fw.close()
    if as_json:
        output.emit_json(report.as_dict())
        return
    output.out.print(
        f"Wrote {report.output}: {report.faces_blurred} "
        f"{'tracks' if report.kind == 'video' else 'faces'} blurred, {report.faces_kept} kept"
        + (f", {report.frames} frames" if report.kind == "video" else "")
    )
    if report.partial:
        output.out.print(f"[yellow]Partial:[/] {escape(report.partial)}")


@app.command()
def verify(
    a: Path,
    b: Path,
    threshold: Annotated[float | None, typer.Option(help="Max distance for 'same'.")] = None,
    case: Annotated[
        str | None, typer.Option(help="Case reference (required; you must be assigned).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """1:1 verification under a case: are the largest faces of A and B the same person?"""
    fw, actor = open_app()
    res = fw.search.verify(actor, read_bytes(a), read_bytes(b), threshold=threshold, case=case)
    if as_json:
        output.emit_json(res.as_dict())
    else:
        verdict = "[green]same person[/]" if res.same else "[red]different people[/]"
        output.out.print(f"{verdict}: distance {res.distance:.4f} (threshold {res.threshold})")


@app.command()
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
    fw, actor = open_app()
    what = f"source {source!r} and all its media" if source else f"media {media}"
    if not yes and not (sys.stdin.isatty() and typer.confirm(f"Delete {what}?")):
        raise InvalidInput("deletion not confirmed (use --yes)")
    counts = (
        fw.gallery.delete_source(actor, source)
        if source
        else fw.gallery.delete_media(actor, media or [])
    )
    fw.close()
    output.out.print(
        f"deleted {counts['media']} media, {counts['faces']} faces, {counts['crops']} crops"
    )


@index_app.command("rebuild")
def index_rebuild() -> None:
    """Rebuild the vector index from the database (the source of truth)."""
    fw, actor = open_app()
    res = fw.gallery.rebuild_index(actor)
    output.out.print(f"index rebuilt: {res['faces']} faces")


@index_app.command("info")
def index_info(as_json: JsonOpt = False) -> None:
    """The configured index backend, its mode and size."""
    fw, _ = open_app()
    info = fw.index.describe()
    fw.close()
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
    fw, actor = open_app()
    report = fw.gallery.purge_index(actor)
    fw.close()
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
    fw, actor = open_app()
    res = fw.gallery.migrate_index(actor, to)
    fw.close()
    if as_json:
        output.emit_json(res)
    else:
        output.out.print(
            f"{res['faces']} faces copied into {res['to']}; "
            f"set FACEWARDEN_INDEX={res['to']} to use it"
        )


@models_app.command("convert")
def models_convert(as_json: JsonOpt = False) -> None:
    """Convert the descriptor and MMOD detector to ONNX now (else done at first use)."""
    from facewarden.adapters.models.onnx_models import MMOD, RESNET, converted_path

    model_dir = settings().model_dir
    rows = []
    for model in (RESNET, MMOD):
        try:
            path = converted_path(model, model_dir)
        except ValueError as exc:
            raise InvalidInput(str(exc), code="model_conversion_failed") from None
        rows.append({"model": model, "onnx": str(path), "bytes": path.stat().st_size})
    if as_json:
        output.emit_json(rows)
        return
    for row in rows:
        output.out.print(f"{row['model']}: {escape(row['onnx'])} ({row['bytes'] / 1e6:.1f} MB)")


@models_app.command("info")
def models_info(as_json: JsonOpt = False) -> None:
    """Which runtime, detector and execution providers the pipeline uses."""
    from facewarden.adapters.models.onnx_models import providers
    from facewarden.services.app import build_pipeline

    config = settings()
    pipeline = build_pipeline(config)
    data = {
        "runtime setting": config.runtime,
        "detector": f"{pipeline.detector.model_id} ({pipeline.detector.runtime})",
        "embedder": f"{pipeline.embedder.model_id} ({pipeline.embedder.runtime})",
        "template space": pipeline.model_id,
        "onnx providers": ", ".join(providers()),
    }
    output.emit_json(data) if as_json else output.show_mapping("models", data)


@app.command()
def stats(as_json: JsonOpt = False) -> None:
    """Counts of sources, media, faces, index size and model."""
    fw, _ = open_app()
    data = fw.stats()
    fw.close()
    output.emit_json(data) if as_json else output.show_mapping("facewarden", data)


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
    fw, actor = open_app()
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
    fw, actor = open_app()
    info = fw.cases.assign(actor, ref, user, remove=remove)
    output.out.print(
        f"case {ref} investigators: {', '.join(info.investigators) or '(none)'}; "
        f"reviewers: {', '.join(info.reviewers) or '(none)'}"
    )


@case_app.command("candidates")
def case_candidates(ref: str, as_json: JsonOpt = False) -> None:
    """Candidates of a case that someone confirmed or rejected, with their state."""
    fw, actor = open_app()
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
    fw, actor = open_app()
    output.emit_json(fw.confirmations.export(actor, ref, search_id=search, face_id=face))


def _decide(search_id: int, face_id: int, decision: str, note: str | None, as_json: bool) -> None:
    fw, actor = open_app()
    state = fw.confirmations.decide(actor, search_id, face_id, decision, note)
    if as_json:
        output.emit_json(state.as_dict())
        return
    output.out.print(
        f"search {search_id} face {face_id}: [bold]{state.status}[/] "
        f"({len(state.decisions)} decision(s))"
    )


NoteOpt = Annotated[str | None, typer.Option(help="Why (kept in the record).")]


@app.command()
def confirm(search_id: int, face_id: int, note: NoteOpt = None, as_json: JsonOpt = False) -> None:
    """Confirm a candidate. Two different people (investigator, reviewer) identify."""
    _decide(search_id, face_id, "confirm", note, as_json)


@app.command()
def reject(search_id: int, face_id: int, note: NoteOpt = None, as_json: JsonOpt = False) -> None:
    """Reject a candidate: it can no longer become an identification."""
    _decide(search_id, face_id, "reject", note, as_json)


@case_app.command("close")
def case_close(ref: str) -> None:
    """Close a case: no further searches under it."""
    fw, actor = open_app()
    fw.cases.close(actor, ref)
    output.out.print(f"case {ref} closed")


@case_app.command("show")
def case_show(ref: str, as_json: JsonOpt = False) -> None:
    """Show a case."""
    fw, actor = open_app()
    data = fw.cases.show(actor, ref).as_dict()
    output.emit_json(data) if as_json else output.show_mapping(f"case {ref}", data)


@case_app.command("list")
def case_list(as_json: JsonOpt = False) -> None:
    """List cases."""
    fw, actor = open_app()
    rows = [c.as_dict() for c in fw.cases.list(actor)]
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        output.out.print(f"{r['ref']}: {r['status']}, expires {r['expires_at']}; {r['purpose']}")


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
    import json

    fw, actor = open_app()
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


def _read_anchors(path: Path) -> list[dict]:
    import json

    try:
        return [json.loads(x) for x in read_bytes(path).decode().splitlines() if x.strip()]
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not a file of audit anchors (JSON lines)") from exc


@key_app.command("status")
def key_status(as_json: JsonOpt = False) -> None:
    """The configured key's id, the keys the data is under, and faces per key."""
    fw, actor = open_app()
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
    fw, actor = open_app()

    def progress(line: str) -> None:
        print(line, flush=True)

    report = fw.keys.rotate(actor, progress)
    output.out.print(
        f"key rotated: {report['old_key']} -> [bold]{report['new_key']}[/] "
        f"({report['faces']} faces, {report['crops']} crops re-encrypted); "
        f"back up the new key file {fw.settings.resolved_key_file} now"
    )
    fw.close()


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[
        Path | None, typer.Option(help="Anchors file from 'audit anchor --out' (truncation).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the chain (MAC under the audit key) and the anchors (the automatic anchor file
    and ``--anchor``); exits 1 and names the first bad record if it was tampered with."""
    fw, actor = open_app()
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
    fw, actor = open_app()
    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    sys.stdout.write(fw.oversight.export(actor, fmt, case_ref=case, since=since))


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[list[str], typer.Option("--role", help="Role (repeatable).")],
) -> None:
    """Create a user; its API token is printed once and stored only as a hash."""
    fw, actor = open_app()
    token = fw.users.add(actor, name, role)
    output.out.print(f"user [bold]{name}[/] ({', '.join(role)}); API token, shown once:")
    print(token)


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users: roles, state, token expiry and last use."""
    fw, actor = open_app()
    rows = fw.users.list(actor)
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        state_ = "active" if r["active"] else "disabled"
        if r["token_expired"]:
            state_ += ", token expired"
        output.out.print(
            f"{r['name']}: {', '.join(r['roles'])} ({state_}); "
            f"last used {r['last_used_at'] or 'never'}; token expires {r['token_expires_at']}"
        )


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user: their token and console sessions stop working at once."""
    fw, actor = open_app()
    res = fw.users.set_active(actor, name, False)
    output.out.print(f"user {name} disabled ({res['sessions_ended']} console session(s) ended)")


@user_app.command("enable")
def user_enable(name: str) -> None:
    """Enable a disabled user again (with the token they had)."""
    fw, actor = open_app()
    fw.users.set_active(actor, name, True)
    output.out.print(f"user {name} enabled")


token_app = typer.Typer(no_args_is_help=True, help="API tokens.")
user_app.add_typer(token_app, name="token")


@token_app.command("rotate")
def user_token_rotate(
    name: Annotated[str | None, typer.Argument(help="User (default: yourself).")] = None,
) -> None:
    """Issue a new API token (shown once); the old one and the user's console sessions stop
    working at once. Your own expired token may be rotated (not a disabled user's)."""
    from facewarden.cli.credentials import TOKEN_ENV, read_token_file

    if state.server:
        from urllib.parse import quote

        from facewarden.cli.remote import open_remote, server_token_file

        remote, actor = open_remote(state.server, state.acting_as)
        target = name or actor.name
        try:
            token = remote.client.call("POST", f"/users/{quote(target, safe='')}/token")["token"]
        finally:
            remote.close()
        output.out.print(f"user [bold]{target}[/]: new API token, shown once:")
        print(token)
        stored = server_token_file(state.server)
        if target == actor.name and not os.environ.get(TOKEN_ENV) and stored.exists():
            write_token_file(stored, token)
        return
    fw = Facewarden(settings())
    try:
        try:
            actor, where = cli_actor(fw, state.acting_as)
        except FacewardenError as exc:
            if exc.code != "token_expired" or name not in (None, state.acting_as):
                raise
            # An expired token may still rotate itself, here, with the data directory.
            stored = os.environ.get(TOKEN_ENV) or read_token_file(token_file(fw.settings))
            actor = fw.actor(token=stored, allow_expired=True)
            if name not in (None, actor.name) or state.acting_as not in (None, actor.name):
                # Only the owner's own token, never anyone else's, even by --as NAME.
                raise Refused(
                    f"an expired token may only rotate itself (it is {actor.name!r}'s)",
                    code="not_your_token",
                ) from exc
            where = TOKEN_ENV if os.environ.get(TOKEN_ENV) else str(token_file(fw.settings))
        target = name or actor.name
        token = fw.users.rotate(actor, target)
    finally:
        fw.close()
    output.out.print(f"user [bold]{target}[/]: new API token, shown once (the old one is dead):")
    print(token)
    if target == actor.name and where != TOKEN_ENV:
        write_token_file(Path(where), token)
        output.err.print(f"stored in {where}")


@app.command()
def login() -> None:
    """Store your API token (typed, or read from standard input) for this data directory in
    a file only your OS account can read."""
    if sys.stdin.isatty():
        token = typer.prompt("API token", hide_input=True)
    else:
        token = sys.stdin.readline()
    if not token.strip():
        raise InvalidInput("no token given")
    if state.server:
        from facewarden.cli.remote import check_token, server_token_file

        actor = check_token(state.server, token.strip())
        if state.acting_as and state.acting_as != actor.name:
            raise InvalidInput(f"that token belongs to {actor.name}, not {state.acting_as}")
        path = server_token_file(state.server)
        write_token_file(path, token.strip())
        output.out.print(f"logged in to {state.server} as [bold]{actor.name}[/]; token in {path}")
        return
    fw = Facewarden(settings())
    try:
        actor = fw.actor(token=token.strip())
    finally:
        fw.close()
    if state.acting_as and state.acting_as != actor.name:
        raise InvalidInput(f"that token belongs to {actor.name}, not {state.acting_as}")
    path = token_file(settings())
    write_token_file(path, token.strip())
    output.out.print(f"logged in as [bold]{actor.name}[/]; token stored in {path} (mode 0600)")


@app.command()
def logout() -> None:
    """Remove this OS account's stored token for this data directory (or server)."""
    from facewarden.cli.remote import server_token_file

    path = server_token_file(state.server) if state.server else token_file(settings())
    path.unlink(missing_ok=True)
    output.out.print(f"removed {path}")


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
    fw, actor = open_app()
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
    fw, actor = open_app()
    receipt = fw.gallery.retention_run(actor)
    fw.close()
    output.emit_json(receipt) if as_json else output.show_mapping("retention run", receipt)


@app.command()
def purge(
    jurisdiction: Annotated[str | None, typer.Option(help="ISO country code.")] = None,
    source: Annotated[str | None, typer.Option(help="Source name.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete everything of one jurisdiction or source, with a receipt and counts."""
    fw, actor = open_app()
    what = f"jurisdiction {jurisdiction}" if jurisdiction else f"source {source}"
    if not yes and not (sys.stdin.isatty() and typer.confirm(f"Purge all media of {what}?")):
        raise InvalidInput("purge not confirmed (use --yes)")
    receipt = fw.gallery.purge(actor, jurisdiction=jurisdiction, source=source)
    fw.close()
    output.emit_json(receipt) if as_json else output.show_mapping("purge receipt", receipt)


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
    from facewarden.services.subjects import render_report_html

    fw, actor = open_app()
    if (selfie is None) == (subject is None):
        raise InvalidInput("give a selfie or --subject REF (one of them)")
    if subject is not None:
        report = fw.subject_records.access(actor, subject, source=source)
    else:
        assert selfie is not None
        report = fw.subjects.access(
            actor, read_bytes(selfie), reference=reference, threshold=threshold
        )
    if out:
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if html:
        html.write_text(render_report_html(report))
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
    fw, actor = open_app()
    if (not selfie) == (subject is None):
        raise InvalidInput("give a selfie or --subject REF (one of them)")
    if subject is not None:
        if not yes and not (
            sys.stdin.isatty() and typer.confirm(f"Erase every face of subject {subject}?")
        ):
            raise InvalidInput("erasure not confirmed (use --yes)")
        receipt = fw.subject_records.erase(actor, subject, source=source)
        fw.close()
        output.emit_json(receipt) if as_json else output.show_mapping("erasure receipt", receipt)
        return
    data = [read_bytes(s) for s in selfie or []]
    if not yes:
        matches = fw.subjects.erase_preview(actor, data, threshold=threshold)
        output.show_subject_matches(matches)
        if not (sys.stdin.isatty() and typer.confirm("Erase these faces?")):
            raise InvalidInput("erasure not confirmed (use --yes)")
    receipt = fw.subjects.erase(
        actor, data, reference=reference, threshold=threshold, face_ids=face
    )
    fw.close()
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
    fw, actor = open_app()
    receipt = fw.subjects.review(actor, request_id, erase=erase or [], release=release or [])
    fw.close()
    output.emit_json(receipt) if as_json else output.show_mapping("review receipt", receipt)


@subject_app.command("list")
def subject_list(as_json: JsonOpt = False) -> None:
    """Rights requests with their dates and time to completion."""
    fw, actor = open_app()
    rows = fw.subjects.requests(actor)
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        output.out.print(
            f"#{r['id']} {r['kind']} {r['reference'] or ''}: {r['faces']} faces, "
            f"received {r['received_at']}, done in {r['seconds_to_complete']} s"
        )


@app.command()
def notice() -> None:
    """Print the public processing notice (Markdown) from configuration and sources."""
    fw = Facewarden(settings())
    print(fw.records.notice())


@app.command()
def report(as_json: JsonOpt = False) -> None:
    """Records of processing: holdings, searches and identifications, rights requests."""
    fw, actor = open_app()
    data = fw.records.report(actor)
    if as_json:
        output.emit_json(data)
        return
    output.show_report(data)


@app.command()
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
    fw, actor = open_app()
    manifest = fw.backups.backup(actor, dest, with_key=with_key)
    fw.close()
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


@app.command()
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


@app.command()
def demo() -> None:
    """Build a small demo gallery from bundled press photos and run a search."""
    from facewarden.cli.demo import run_demo

    run_demo(settings() if state.data_dir else None)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (FACEWARDEN_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FACEWARDEN_PORT).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP API and the web console (one process; API docs at /docs)."""
    import uvicorn

    from facewarden.web.server import create_app

    s = settings()
    web = create_app(s)
    uvicorn.run(
        web,
        host=host or s.host,
        port=port or s.port,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
    )


def main() -> None:
    try:
        app()
    except Exception as exc:  # every error ends as one line, never a traceback
        # A full disk is named as such, also under the audit failure it causes.
        error = storage_failure(exc) or (exc if isinstance(exc, FacewardenError) else None)
        if error is None and isinstance(exc, OSError) and exc.filename:
            # A path given on the command line that cannot be read or written.
            error = InvalidInput(f"{exc.strerror}: {exc.filename}", code="bad_path")
        if error is None:
            if os.environ.get("FACEWARDEN_DEBUG"):
                raise
            error = FacewardenError(
                f"{type(exc).__name__}: {exc} (set FACEWARDEN_DEBUG=1 for the traceback)",
                code="internal",
            )
        output.err.print(
            f"[red]error[/] {escape(f'[{error.code}]')}: {escape(error.message)}", highlight=False
        )
        sys.exit(error.exit_code)
