"""Searching: ``search``, ``verify`` and ``redact``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, open_app, progress_bar, read_bytes
from facewarden.core.filters import SearchFilter
from facewarden.core.media import is_video_path

if TYPE_CHECKING:
    from facewarden.core.schemas import SearchResult, VideoSearchResult


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
    photo: SearchResult | None = None
    video: VideoSearchResult | None = None
    where = SearchFilter.of(source, jurisdiction)
    with open_app() as (fw, actor):
        if is_video_path(probe):
            with progress_bar(as_json) as bar:
                task = bar.add_task(f"scanning {probe.name[:30]}", total=None)
                video = fw.video.search(
                    actor,
                    probe,
                    case=case or None,
                    fps=fps,
                    top_k=top,
                    threshold=threshold,
                    progress=lambda t, d: bar.update(task, completed=t, total=d),
                    allow_low_quality=allow_low_quality,
                    where=where,
                )
        else:
            photo = fw.search.search(
                actor,
                read_bytes(probe),
                case=case or None,
                probe_name=str(probe),
                top_k=top,
                threshold=threshold,
                where=where,
                allow_low_quality=allow_low_quality,
            )
    if photo is not None:
        output.emit_json(photo.as_dict()) if as_json else output.show_search(photo)
    elif video is not None:
        if thumbnails is not None:
            output.write_thumbnails(video, thumbnails)
        output.emit_json(video.as_dict()) if as_json else output.show_video_search(video)


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
    with open_app() as (fw, actor), progress_bar(as_json or not is_video_path(source)) as bar:
        task = bar.add_task(f"redacting {source.name[:30]}", total=None)
        report = fw.redaction.redact(
            actor,
            source,
            keep or [],
            out,
            case=case,
            progress=lambda t, d: bar.update(task, completed=t, total=d),
        )
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
    with open_app() as (fw, actor):
        res = fw.search.verify(actor, read_bytes(a), read_bytes(b), threshold=threshold, case=case)
    if as_json:
        output.emit_json(res.as_dict())
    else:
        verdict = "[green]same person[/]" if res.same else "[red]different people[/]"
        output.out.print(f"{verdict}: distance {res.distance:.4f} (threshold {res.threshold})")
