"""Sources and ingest: ``source add|list`` and ``ingest``."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, open_app, progress_bar, settings, state

source_app = typer.Typer(no_args_is_help=True, help="Register and list media sources.")


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
    with open_app() as (fw, actor):
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
    with open_app() as (fw, _):
        rows = [vars(s) for s in fw.sources.list()]
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        output.out.print(
            f"{r['name']}: {r['jurisdiction']}, {r['retention_days']:g}d, "
            f"{r['media']} media; basis: {r['lawful_basis']}; purpose: {r['purpose']}"
        )


@contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """Ctrl-C sets the flag the ingest checks between images (it stops there, keeps what it
    stored and reports it); a second Ctrl-C interrupts at once. A flag, not an exception
    raised wherever the signal lands: Python ignores a KeyboardInterrupt raised inside a
    weak-reference callback, and the ingest then ran to its end."""
    stop = threading.Event()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # (a background job)
    ):
        yield stop
        return

    def on_sigint(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def early_workers(
    paths: list[Path], workers: int | None, ray: str | None
) -> AbstractContextManager[None]:
    """Start the worker processes of a local ingest of several files before the app opens,
    so that their start-up overlaps this process's (imports, database, checks): no more than
    the ingest service would run (one per image, at most ``workers``), none for a worker
    count it refuses."""
    from facewarden.core.limits import MAX_WORKERS

    if state.server or ray is not None:
        return nullcontext()
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        return nullcontext()  # the ingest refuses it
    config = settings()
    count = files_up_to(paths, workers or config.workers)
    if count < 2:
        return nullcontext()  # one image runs in this process: no pool
    from facewarden.services.workers import pool_started_early

    return pool_started_early(count, config, ingest=True)


def files_up_to(paths: list[Path], limit: int) -> int:
    """How many files other than videos ``paths`` name, counted up to ``limit`` (an archive
    counts as ``limit``; videos are scanned by the video path, not by this pool), looking no
    further than needed to know."""
    from facewarden.core.media import is_video_path

    seen = 0
    folders = []
    for path in paths:
        if path.is_dir():
            folders.append(path)
        elif path.is_file() and not is_video_path(path):
            seen += limit if path.suffix.lower() == ".zip" else 1
        if seen >= limit:
            return limit
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                    elif entry.is_file() and not is_video_path(entry.name):
                        seen += 1
                        if seen >= limit:
                            return limit
        except OSError:  # the ingest reports an unreadable folder itself
            continue
    return seen


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
    with (
        early_workers(paths, workers, ray),
        open_app() as (fw, actor),
        progress_bar(as_json) as bar,
    ):
        task = bar.add_task("ingesting", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(
                task, completed=done, total=total, description=f"ingesting {Path(label).name[:30]}"
            )

        with interrupt_flag() as stop:
            summary = fw.ingest.run(
                actor,
                paths,
                source,
                workers=workers,
                progress=progress,
                ray=ray,
                manifest=manifest,
                cancelled=stop.is_set,
            )
    if as_json:
        output.emit_json(summary.as_dict())
    else:
        output.show_ingest(summary)
    if summary.interrupted:
        raise typer.Exit(130)
