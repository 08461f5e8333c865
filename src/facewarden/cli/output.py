"""Rendering of results for people (Rich) and machines (--json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from facewarden.core.schemas import IngestSummary, SearchResult, VideoSearchResult

out = Console()
err = Console(stderr=True)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def show_search(result: SearchResult) -> None:
    out.print(
        f"[bold]Probe[/] {result.probe}  case [bold]{result.case}[/]  "
        f"search [bold]{result.search_id}[/]  "
        f"threshold {result.threshold}{policy_note(result.threshold_policy)}  "
        f"gallery {result.gallery_size} faces  audit #{result.audit_seq}"
    )
    if not result.faces:
        out.print("[yellow]No face detected in the probe.[/]")
    for n, face in enumerate(result.faces, 1):
        q = face.quality
        out.print(
            f"\n[bold]Face {n}[/] box {face.box} (top, right, bottom, left)  "
            f"quality: size {q['width']}x{q['height']}  blur {q['blur']}  "
            f"yaw {q['yaw']}  pose {q['pose']}"
            + (f"  flags {', '.join(q['flags'])}" if q["flags"] else "")
        )
        if face.quality_problems:
            problems = ", ".join(face.quality_problems)
            if face.searched:
                out.print(f"  [red]Below the quality bar ({problems}): searched by override.[/]")
            else:
                out.print(f"  [yellow]Below the quality bar ({problems}): not searched.[/]")
                continue
        if face.expected_false_candidates is not None:
            out.print(
                "  Expected false candidates if this person is not in the gallery: "
                f"{face.expected_false_candidates:g} (estimate)"
            )
        if face.no_candidate:
            out.print(f"  [yellow]No candidate within threshold {result.threshold}.[/]")
            continue
        table = Table(show_edge=False)
        for col in ("rank", "distance", "score", "FMR", "exp. strangers", "face", "media"):
            table.add_column(col, no_wrap=True)
        table.add_column("source", no_wrap=True)
        table.add_column("subject / faces", no_wrap=True)
        table.add_column("path", overflow="fold")
        for c in face.candidates:
            table.add_row(
                str(c.rank),
                f"{c.distance:.4f}",
                f"{c.score:.3f}",
                "-" if c.fmr is None else f"{c.fmr:.2g}",
                "-" if c.expected_strangers is None else f"{c.expected_strangers:.3g}",
                str(c.face_id),
                str(c.media_id),
                f"{c.source} ({c.jurisdiction})",
                f"{c.subject or '-'} / {c.faces_matched}"
                + (f" ({c.duplicates_collapsed} dup.)" if c.duplicates_collapsed else ""),
                c.media_path,
            )
        out.print(table)
        if face.duplicates_collapsed:
            out.print(
                f"  {face.duplicates_collapsed} near-duplicate photo(s) folded into the "
                "candidates above"
            )
    if result.calibration:
        out.print(
            "\n[dim]FMR: calibrated false match rate per comparison at the candidate's "
            "distance; exp. strangers: gallery size x FMR, the expected number of unrelated "
            f"people within that distance. Estimates from {result.calibration['data']} "
            f"({result.calibration['pairs']:,} impostor pairs).[/]"
        )
    out.print("\n[dim]Candidates are leads for human review, not identifications.[/]")


def policy_note(policy: dict | None) -> str:
    if not policy or policy.get("policy") != "fpir":
        return ""
    note = "" if policy.get("within_target", True) else "; NOT shown to meet it at this size"
    return f" (by target FPIR {policy['target_fpir']:g}{note})"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


def show_video_search(result: VideoSearchResult) -> None:
    v = result.video
    out.print(
        f"[bold]Video[/] {result.probe}  case [bold]{result.case}[/]  "
        f"search [bold]{result.search_id}[/]  audit #{result.audit_seq}\n"
        f"  {v['width']}x{v['height']}, {v['duration_s'] or 0:.1f} s, {v['codec']}; "
        f"{v['frames_sampled']} frames sampled at {v['sample_fps']}/s, "
        f"{v['detections']} detections in {v['tracks']} tracks; "
        f"threshold {result.threshold}, gallery {result.gallery_size} faces"
    )
    if result.partial:
        out.print(f"[yellow]Partial result:[/] {escape(result.partial)}")
    if not result.timeline:
        out.print(f"[yellow]No candidate within threshold {result.threshold} in any track.[/]")
    else:
        table = Table(title="Timeline: who appears when", show_edge=False)
        for col in ("face", "best distance", "score", "appears at", "tracks", "source"):
            table.add_column(col, no_wrap=True)
        table.add_column("path", overflow="fold")
        for e in result.timeline:
            table.add_row(
                str(e.face_id),
                f"{e.best_distance:.4f}",
                f"{e.score:.3f}",
                ", ".join(f"{_clock(a)}-{_clock(b)}" for a, b in e.ranges),
                ", ".join(map(str, e.track_ids)),
                f"{e.source} ({e.jurisdiction})",
                e.media_path,
            )
        out.print(table)
    tracks = Table(title="Tracks", show_edge=False)
    for col in ("track", "from", "to", "best frame", "faces", "box", "top candidate"):
        tracks.add_column(col, no_wrap=True)
    for t in result.tracks:
        top = t.candidates[0] if t.candidates else None
        tracks.add_row(
            str(t.track_id),
            _clock(t.start_s),
            _clock(t.end_s),
            _clock(t.best_frame_s),
            str(t.detections),
            str(t.box),
            f"face {top.face_id} ({top.distance:.3f})" if top else "[dim]none[/]",
        )
    out.print(tracks)
    out.print("\n[dim]Candidates are leads for human review, not identifications.[/]")


def write_thumbnails(result: VideoSearchResult, folder: Path) -> None:
    """Each track's best face crop as ``track-N.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in result.tracks:
        if t.thumbnail_jpeg:
            (folder / f"track-{t.track_id}.jpg").write_bytes(t.thumbnail_jpeg)


def show_ingest(summary: IngestSummary) -> None:
    status = "[yellow]interrupted[/] (re-run to resume)" if summary.interrupted else "done"
    out.print(f"Ingest into [bold]{summary.source}[/]: {status}")
    out.print(
        f"  images stored {summary.images}, videos stored {summary.videos}, "
        f"faces enrolled {summary.faces}, "
        f"already ingested {summary.duplicates}, faces too small {summary.faces_rejected}, "
        f"suppressed (erased people) {summary.faces_suppressed}, "
        f"skipped {len(summary.skipped)}"
    )
    rates = summary.as_dict()
    out.print(
        f"  images stored without any face {summary.images_without_face}; "
        f"{summary.elapsed_s:.1f} s, {rates['images_per_s']} images/s, "
        f"{rates['faces_per_s']} faces/s (detector {summary.detector})"
    )
    if summary.images_reduced or summary.faces_capped:
        out.print(
            f"  bounded: {summary.images_reduced} large images detected at a reduced size, "
            f"{summary.faces_capped} faces beyond the per-image cap not stored"
        )
        for note in summary.notes:
            out.print(f"    {note}")
    if summary.skipped:
        table = Table(title="Skipped", show_edge=False)
        table.add_column("file")
        table.add_column("reason")
        for s in summary.skipped:
            table.add_row(s.path, f"{s.reason} [dim]({s.code})[/]")
        out.print(table)
    for p in summary.partial:
        out.print(f"[yellow]Partly stored[/] {p.path}: {p.reason}")


def show_mapping(title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, show_edge=False)
    for k, v in data.items():
        table.add_row(str(k), str(v))
    out.print(table)


def show_receipts(receipts: list[dict[str, Any]]) -> None:
    """The receipts list: one row each, its counts and the hash that identifies it."""
    if not receipts:
        out.print("No receipt.")
        return
    table = Table(show_edge=False)
    for col in ("audit #", "date (UTC)", "kind", "reference", "by", "counts", "hash"):
        table.add_column(col)
    for r in receipts:
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["counts"].items())
        digest = r["receipt_sha256"] or r["audit_hash"]
        table.add_row(
            str(r["audit_seq"]),
            str(r["at"])[:19].replace("T", " "),
            r["kind"],
            escape(r["reference"] or "-"),
            escape(r["by"]),
            counts,
            f"{'receipt' if r['receipt_sha256'] else 'audit'} {digest[:16]}",
        )
    out.print(table)


def show_subject_matches(matches: list[dict[str, Any]]) -> None:
    if not matches:
        out.print("No stored face matches the selfie.")
        return
    table = Table(title="Candidates (check each before acting)", show_edge=False)
    proposals = any("proposal" in m for m in matches)
    for col in ("face", "distance", *(("proposal",) if proposals else ())):
        table.add_column(col, no_wrap=True)
    for col in ("media", "source", "kept until", "searches"):
        table.add_column(col, no_wrap=True)
    table.add_column("path", overflow="fold")
    for m in matches:
        table.add_row(
            str(m["face_id"]),
            f"{m['distance']:.4f}",
            *((m.get("proposal", ""),) if proposals else ()),
            str(m["media_id"]),
            f"{m['source']} ({m['jurisdiction']})",
            m["retained_until"][:10],
            str(len(m["searches"])),
            m["media_path"],
        )
    out.print(table)


def show_report(data: dict[str, Any]) -> None:
    def table(title: str, rows: list[dict[str, Any]]) -> None:
        t = Table(title=title, show_edge=False)
        if not rows:
            out.print(f"{title}: none")
            return
        for col in rows[0]:
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(
                *(", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in r.values())
            )
        out.print(t)

    table("Sources", data["sources"])
    table("Jurisdictions", [{"jurisdiction": k, **v} for k, v in data["jurisdictions"].items()])
    table("Cases", data["cases"])
    keys = ("id", "kind", "reference", "received_at", "seconds_to_complete", "faces")
    table("Rights requests", [{k: r[k] for k in keys} for r in data["rights_requests"]])
    head = data["audit_head"]
    out.print(
        f"identifications: {data['identifications']}; audit head #{head['seq']} {head['hash']}"
    )
