"""What a reviewer sees to judge a candidate: the probe face kept with the case, beside the
candidate, with distance, quality of both, provenance, decisions, and the candidate's full
source photo with its box on demand. Every view is logged and case-scoped like the rest of
a case's records (``CaseService.read_access``)."""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.tables import (
    Case,
    CaseSearch,
    Confirmation,
    Face,
    Media,
    ProbeFace,
    SearchHit,
    Source,
)
from facewarden.core.actors import Actor
from facewarden.core.binding import probe_face_aad
from facewarden.core.clock import as_utc
from facewarden.core.errors import InvalidInput, NotFound, Refused
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.cases import CaseService
from facewarden.services.confirmations import investigators_of, status_of
from facewarden.services.keyring import Keyring

MAX_PER_PAGE = 100


class ReviewService:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
        keyring: Keyring,
        cases: CaseService,
    ) -> None:
        self.sessions = sessions
        self.audit = audit
        self.guard = guard
        self.keyring = keyring
        self.cases = cases

    def _case_of_search(self, search_id: int) -> str:
        with self.sessions() as session:
            ref = session.scalar(
                select(Case.ref)
                .join(CaseSearch, CaseSearch.case_id == Case.id)
                .where(CaseSearch.id == search_id)
            )
        if ref is None:
            raise NotFound(f"no search {search_id}")
        return ref

    @staticmethod
    def _case_fields(info) -> dict[str, Any]:
        return {"case_ref": info.ref, "legal_basis": info.legal_basis, "purpose": info.purpose}

    # -- probe faces -----------------------------------------------------------------------
    def probe_face(self, actor: Actor, search_id: int, face_index: int) -> bytes:
        """The kept crop of probe face ``face_index`` of a search (JPEG): for the case's
        assigned people while it is open, the DPO and auditors; every view is logged."""
        target = {"search_id": search_id, "probe_face": face_index}
        self.guard.authorize(
            actor, "probe.view", "investigator", "reviewer", "dpo", "auditor", details=target
        )
        ref = self._case_of_search(search_id)
        info, via = self.cases.read_access(actor, ref, "probe.view", record=False, details=target)
        with self.sessions() as session:
            row = session.execute(
                select(ProbeFace.data, ProbeFace.key_id).where(
                    ProbeFace.search_id == search_id, ProbeFace.face_index == face_index
                )
            ).first()
        if row is None:
            raise NotFound(
                f"no probe face {face_index} kept for search {search_id} (not searched, "
                "or wiped with its case)"
            )
        data = self.keyring.cipher.decrypt(
            row.data, probe_face_aad(search_id, face_index), row.key_id
        )
        self.audit.record(
            actor, "probe.view", details=target | {"access": via}, **self._case_fields(info)
        )
        return data

    # -- the candidate's source photo ------------------------------------------------------
    def source_photo(self, actor: Actor, search_id: int, face_id: int) -> bytes:
        """The full source photo of a candidate this search returned, with the face's box
        drawn (JPEG), read from where it was ingested and checked against its hash. Same
        access as the candidate's crop (restricted media: DPO only); logged."""
        from PIL import Image, ImageDraw, ImageOps

        target = {"search_id": search_id, "face_id": face_id}
        self.guard.authorize(
            actor, "source.view", "investigator", "reviewer", "dpo", "auditor", details=target
        )
        ref = self._case_of_search(search_id)
        info, via = self.cases.read_access(actor, ref, "source.view", record=False, details=target)
        fields = self._case_fields(info)
        with self.sessions() as session:
            hit = session.scalar(
                select(SearchHit.id).where(
                    SearchHit.search_id == search_id, SearchHit.face_id == face_id
                )
            )
            if hit is None:
                raise NotFound(f"face {face_id} is not a candidate of search {search_id}")
            row = session.execute(
                select(Face, Media.path, Media.sha256, Media.restricted)
                .join(Media, Media.id == Face.media_id)
                .where(Face.id == face_id)
            ).first()
        if row is None:
            raise NotFound(f"face {face_id} is no longer held (erased or expired)")
        face, path, sha, restricted = row
        if restricted and not actor.has("dpo"):
            problem = f"source.view refused: face {face_id} belongs to restricted media (DPO only)"
            self.audit.record(
                actor, "source.view", outcome="refused", error=problem, details=target, **fields
            )
            raise Refused(problem, code="restricted")
        if face.time_s is not None:
            raise InvalidInput(
                f"face {face_id} comes from a video: see its time ({face.time_s:.1f} s) in "
                "the source"
            )
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise NotFound(f"the source photo is no longer at {path}") from exc
        if hashlib.sha256(data).hexdigest() != sha:
            raise NotFound(f"the file at {path} is not the photo that was ingested (hash)")
        original = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        picture = original.convert("RGB")
        picture.thumbnail((1600, 1600))
        sx, sy = picture.width / original.width, picture.height / original.height
        draw = ImageDraw.Draw(picture)
        box = [face.left, face.top, face.right, face.bottom]
        draw.rectangle(
            [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy],
            outline=(255, 200, 0),
            width=max(2, picture.width // 200),
        )
        buf = io.BytesIO()
        picture.save(buf, format="JPEG", quality=88)
        self.audit.record(actor, "source.view", details=target | {"access": via}, **fields)
        return buf.getvalue()

    # -- the review sheet ------------------------------------------------------------------
    def sheet(self, actor: Actor, ref: str, *, page: int = 1, per_page: int = 12) -> dict[str, Any]:
        """One page of a case's candidates for review, newest search first: each with its
        probe face (quality, problems, time in a probe video), the candidate (distance,
        quality, provenance, time in a gallery video, or ``erased``), and the decisions."""
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidInput(f"page must be at least 1 and per_page in 1..{MAX_PER_PAGE}")
        info, via = self.cases.read_access(
            actor, ref, "case.review", details={"page": page, "per_page": per_page}
        )
        with self.sessions() as session:
            case = session.scalar(select(Case).where(Case.ref == ref))
            if case is None:  # read_access() refuses a missing case
                raise NotFound(f"no case {ref!r}")
            members = set(investigators_of(case))
            rows = session.execute(
                select(SearchHit, CaseSearch)
                .join(CaseSearch, CaseSearch.id == SearchHit.search_id)
                .where(CaseSearch.case_id == case.id)
                .order_by(CaseSearch.id.desc(), SearchHit.probe_face, SearchHit.rank)
            ).all()
            total = len(rows)
            chosen = rows[(page - 1) * per_page : page * per_page]
            search_ids = sorted({s.id for _, s in chosen})
            face_ids = sorted({h.face_id for h, _ in chosen})
            probes = {
                (p.search_id, p.face_index): p
                for p in session.scalars(
                    select(ProbeFace).where(ProbeFace.search_id.in_(search_ids))
                )
            }
            held = {
                f.id: (f, m, src)
                for f, m, src in session.execute(
                    select(Face, Media, Source)
                    .join(Media, Media.id == Face.media_id)
                    .join(Source, Source.id == Media.source_id)
                    .where(Face.id.in_(face_ids))
                )
            }
            decided: dict[tuple[int, int], list[Confirmation]] = defaultdict(list)
            for d in session.scalars(
                select(Confirmation)
                .where(Confirmation.search_id.in_(search_ids))
                .order_by(Confirmation.id)
            ):
                decided[(d.search_id, d.face_id)].append(d)
            items = []
            for hit, search in chosen:
                probe = probes.get((search.id, hit.probe_face))
                face = held.get(hit.face_id)
                decisions = decided[(search.id, hit.face_id)]
                item: dict[str, Any] = {
                    "search_id": search.id,
                    "probe": search.probe_name,
                    "searched_by": search.searched_by,
                    "searched_at": as_utc(search.searched_at).isoformat(),
                    "probe_face": hit.probe_face,
                    "probe_kept": probe is not None,
                    "probe_quality": probe.quality if probe else None,
                    "probe_quality_problems": probe.quality_problems if probe else [],
                    "probe_time_s": probe.time_s if probe else None,
                    "face_id": hit.face_id,
                    "rank": hit.rank,
                    "distance": hit.distance,
                    "erased": face is None,
                    "status": status_of(decisions, members),
                    "decisions": [
                        {
                            "user": d.user_name,
                            "decision": d.decision,
                            "note": d.note,
                            "decided_at": as_utc(d.decided_at).isoformat(),
                        }
                        for d in decisions
                    ],
                }
                if face is not None:
                    f, media, source = face
                    item |= {
                        "candidate_quality": f.quality,
                        "media_id": media.id,
                        "media_path": media.path,
                        "source": source.name,
                        "jurisdiction": source.jurisdiction,
                        "lawful_basis": source.lawful_basis,
                        "ingested_at": as_utc(media.ingested_at).isoformat(),
                        "restricted": media.restricted,
                        "time_s": f.time_s,
                        "box": [f.top, f.right, f.bottom, f.left],
                    }
                items.append(item)
        return {
            "case": ref,
            "status": info.status,
            "access": via,
            "page": page,
            "per_page": per_page,
            "total": total,
            "pages": max(1, -(-total // per_page)),
            "items": items,
        }
