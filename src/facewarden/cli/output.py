"""Rendering of results for people (Rich) and machines (--json)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from facewarden.core.schemas import IngestSummary, SearchResult

out = Console()
err = Console(stderr=True)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def show_search(result: SearchResult) -> None:
    out.print(
        f"[bold]Probe[/] {result.probe}  case [bold]{result.case}[/]  "
        f"threshold {result.threshold}  gallery {result.gallery_size} faces  "
        f"audit #{result.audit_seq}"
    )
    if not result.faces:
        out.print("[yellow]No face detected in the probe.[/]")
    for n, face in enumerate(result.faces, 1):
        q = face.quality
        out.print(
            f"\n[bold]Face {n}[/] box {face.box} (top, right, bottom, left)  "
            f"size {q['width']}x{q['height']}  blur {q['blur']}  pose {q['pose']}"
            + (f"  flags {', '.join(q['flags'])}" if q["flags"] else "")
        )
        if face.no_candidate:
            out.print(f"  [yellow]No candidate within threshold {result.threshold}.[/]")
            continue
        table = Table(show_edge=False)
        for col in ("rank", "distance", "score", "face", "media", "source"):
            table.add_column(col, no_wrap=True)
        table.add_column("path", overflow="fold")
        for c in face.candidates:
            table.add_row(
                str(c.rank),
                f"{c.distance:.4f}",
                f"{c.score:.3f}",
                str(c.face_id),
                str(c.media_id),
                f"{c.source} ({c.jurisdiction})",
                c.media_path,
            )
        out.print(table)
    out.print("\n[dim]Candidates are leads for human review, not identifications.[/]")


def show_ingest(summary: IngestSummary) -> None:
    status = "[yellow]interrupted[/] (re-run to resume)" if summary.interrupted else "done"
    out.print(f"Ingest into [bold]{summary.source}[/]: {status}")
    out.print(
        f"  images stored {summary.images}, faces enrolled {summary.faces}, "
        f"already ingested {summary.duplicates}, faces too small {summary.faces_rejected}, "
        f"skipped {len(summary.skipped)}"
    )
    if summary.skipped:
        table = Table(title="Skipped", show_edge=False)
        table.add_column("file")
        table.add_column("reason")
        for s in summary.skipped:
            table.add_row(s.path, f"{s.reason} [dim]({s.code})[/]")
        out.print(table)


def show_mapping(title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, show_edge=False)
    for k, v in data.items():
        table.add_row(str(k), str(v))
    out.print(table)
