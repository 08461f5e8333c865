"""1:N search and 1:1 verification. Every attempt, refused or failed, is logged."""

from __future__ import annotations

import functools
import hashlib
import math
from datetime import UTC
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Row, Select, bindparam, select

from facewarden.adapters.imaging import decode_image
from facewarden.adapters.index.base import IndexFilter
from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import Case, CaseSearch, Face, Media, SearchHit, Source
from facewarden.core.actors import Actor
from facewarden.core.clock import as_utc, utcnow
from facewarden.core.errors import FacewardenError, InvalidInput, NoFaceFound
from facewarden.core.schemas import Candidate, FaceMatches, FaceTemplate, SearchResult, VerifyResult

if TYPE_CHECKING:
    from facewarden.services.app import Facewarden

MODEL_THRESHOLD = 0.6
SCORE_SCALE = 0.06
FETCH_MARGIN = 8  # extra proposals per search for hits the database re-check drops


def probe_aad(case_ref: str, probe_sha256: str) -> bytes:
    return f"probe:{case_ref}:{probe_sha256}".encode()


def match_score(distance: float) -> float:
    """Monotone 0..1 score, 0.5 at the model's operating point (0.6). Not a probability."""
    return round(1.0 / (1.0 + math.exp((distance - MODEL_THRESHOLD) / SCORE_SCALE)), 4)


class SearchService:
    def __init__(self, app: Facewarden) -> None:
        self.app = app

    def search(
        self,
        actor: Actor,
        probe: bytes,
        *,
        case: str | None,
        probe_name: str = "probe",
        top_k: int | None = None,
        threshold: float | None = None,
        where: IndexFilter | None = None,
    ) -> SearchResult:
        """Search every face of ``probe``; ``where`` limits candidates to some sources or
        jurisdictions (the filter is recorded in the audit log)."""
        app = self.app
        top_k = top_k or app.settings.top_k
        threshold = app.settings.threshold if threshold is None else threshold
        if not 0 < threshold <= 2 or top_k < 1:
            raise InvalidInput("threshold must be in (0, 2] and top-k at least 1")
        probe_hash = hashlib.sha256(probe).hexdigest()
        audit = {"probe_hash": probe_hash, "threshold": threshold, "model_id": app.model_id}
        app.authorize(actor, "search", "investigator", case_ref=case, **audit)
        info = app.cases.require_usable(
            actor,
            case,
            "search",
            **{k: v for k, v in audit.items() if k != "case_ref"},
        )
        audit |= {"case_ref": info.ref, "legal_basis": info.legal_basis, "purpose": info.purpose}
        try:
            image = decode_image(probe, max_pixels=app.settings.max_image_pixels)
            faces = app.pipeline.process(image, enrol=False).faces
            matches = [self.match(f, top_k, threshold, where=where) for f in faces]
        except FacewardenError as exc:
            app.audit.record(actor, "search", outcome="error", error=exc.message, **audit)
            raise
        search_id, size, seq = self.record(
            actor,
            info.ref,
            probe_name,
            probe_hash,
            faces,
            matches,
            top_k,
            audit,
            extra={"detector": app.settings.detector_setting}
            | ({"filter": filter_dict(where)} if where is not None else {}),
        )
        return SearchResult(
            probe_name,
            probe_hash,
            info.ref,
            threshold,
            size,
            app.model_id,
            matches,
            seq,
            search_id,
            detector=app.settings.detector_setting,
        )

    def record(
        self,
        actor: Actor,
        ref: str,
        probe_name: str,
        probe_hash: str,
        faces: list[FaceTemplate],
        matches: list[FaceMatches],
        top_k: int,
        audit: dict,
        extra: dict | None = None,
    ) -> tuple[int, int, int]:
        """Log the search and keep its record with the case: hits, probe hash and (if the
        case asks) the probe's templates. The quota is re-checked under the write lock."""

        app = self.app
        problem = None
        with transaction(app.writes) as session:
            q = select(Case).where(Case.ref == ref)
            if session.get_bind().dialect.name == "postgresql":
                q = q.with_for_update()
            case = session.scalar(q)
            problem, code, info = app.cases.problem(
                session, actor, ref, "search", assigned=True, case=case
            )
            if problem is None:
                size = app.gallery_size(session)
                event = app.audit.append(
                    session,
                    actor,
                    "search",
                    gallery_size=size,
                    details={
                        "probe": probe_name,
                        "top_k": top_k,
                        "faces": [
                            {
                                "box": m.box,
                                "results": [
                                    {"face_id": c.face_id, "distance": c.distance, "rank": c.rank}
                                    for c in m.candidates
                                ],
                            }
                            for m in matches
                        ],
                    }
                    | (extra or {}),
                    **audit,
                )
                templates = None
                if case.keep_probe_templates and faces:
                    vecs = np.stack([f.descriptor for f in faces]).astype("<f4")
                    templates = app.cipher.encrypt(vecs.tobytes(), probe_aad(ref, probe_hash))
                record = CaseSearch(
                    case_id=case.id,
                    probe_sha256=probe_hash,
                    probe_name=probe_name,
                    searched_by=actor.name,
                    searched_at=utcnow(),
                    audit_seq=event.seq,
                    faces=len(faces),
                    probe_templates=templates,
                )
                session.add(record)
                session.flush()
                session.add_all(
                    SearchHit(
                        search_id=record.id,
                        probe_face=n,
                        face_id=c.face_id,
                        media_sha256=c.media_sha256,
                        face_index=c.face_index,
                        rank=c.rank,
                        distance=c.distance,
                    )
                    for n, m in enumerate(matches)
                    for c in m.candidates
                )
        if problem is not None:
            fields = {
                k: v for k, v in audit.items() if k not in ("case_ref", "legal_basis", "purpose")
            }
            app.cases.refuse(actor, "search", ref, info, problem, code, **fields)
        return record.id, size, event.seq

    def match(
        self,
        face: FaceTemplate,
        top_k: int,
        threshold: float,
        *,
        searchable_only: bool = True,
        where: IndexFilter | None = None,
        exact: bool = False,
    ) -> FaceMatches:
        """Index proposes, the database disposes: every hit is re-checked and re-scored.

        The index's distances are exact (every backend ranks on full vectors), so it is asked
        for ``top_k`` plus a small margin for hits the database drops (erased while the index
        lags, restricted, expired), and the database re-checks the nearest ``top_k`` of them
        first, then more only if it dropped some; when every proposal was within the
        threshold and too many were dropped, the index is asked again for four times as many.

        ``searchable_only=False`` (subject rights) also finds restricted and expired faces
        that are still held; ``exact`` has the index compare every vector."""
        app = self.app
        app.catch_up_index()
        index = app.index
        # Not clamped to the index's size: every backend pads a short answer, and counting
        # the index is a COUNT(*) on pgvector. It is counted only when widening.
        fetch = top_k + FETCH_MARGIN
        checked: set[int] = set()
        scored: list[tuple[float, Row]] = []
        while True:
            dists, ids = index.search(face.descriptor[None, :], fetch, where, exact=exact)
            hit_ids = ids[0][(ids[0] >= 0) & (dists[0] <= threshold + 1e-6)].tolist()
            # The nearest unchecked hits, only as many as are still wanted: the database is
            # asked again only for hits it dropped.
            pending = [i for i in hit_ids if i not in checked]
            while pending and len(scored) < top_k:
                batch, pending = pending[: top_k - len(scored)], pending[top_k - len(scored) :]
                checked.update(batch)
                scored += self._recheck(batch, face.descriptor, threshold, searchable_only, where)
            # All hits were within threshold and too many were dropped: look further.
            widen = len(hit_ids) == fetch and len(scored) < top_k and fetch < len(index)
            if not widen:
                break
            fetch = min(fetch * 4, len(index))
        scored.sort(key=lambda r: (r[0], r[1][0]))
        candidates = [candidate(rank, *hit) for rank, hit in enumerate(scored[:top_k], 1)]
        return FaceMatches(face.detection.box.as_list(), face.quality.as_dict(), candidates)

    def _recheck(
        self,
        face_ids: list[int],
        probe: np.ndarray,
        threshold: float,
        searchable_only: bool,
        where: IndexFilter | None,
    ) -> list[tuple[float, Row]]:
        """(distance, row) of each proposed face the database still holds and admits,
        re-scored from its decrypted template, within ``threshold``."""
        from facewarden.services.app import template_aad

        app = self.app
        statement = recheck_statement(searchable_only, where, len(face_ids))
        with app.single_reads.connect() as conn:
            params = {f"id{n}": face_id for n, face_id in enumerate(face_ids)}
            params |= {"model_id": app.model_id, "now": utcnow()}
            rows = conn.execute(statement, params).all()
        if not rows:
            return []
        decrypt = app.cipher.decrypt_template
        vecs = np.stack([decrypt(r.template, template_aad(r.sha256, r.face_index)) for r in rows])
        dist = np.linalg.norm(vecs - probe, axis=1)
        return [(float(d), r) for d, r in zip(dist, rows, strict=True) if d <= threshold]

    def verify(
        self,
        actor: Actor,
        a: bytes,
        b: bytes,
        *,
        threshold: float | None = None,
        case: str | None = None,
    ) -> VerifyResult:
        """Same person or not, comparing the largest face of each image. Like a search, a
        verification needs an open case the actor is assigned to as an investigator, uses
        its quota, and is logged under it."""
        app = self.app
        threshold = app.settings.threshold if threshold is None else threshold
        hashes = [hashlib.sha256(x).hexdigest() for x in (a, b)]
        audit: dict = {"threshold": threshold, "model_id": app.model_id, "probe_hash": hashes[0]}
        app.authorize(actor, "verify", "investigator", case_ref=case, **audit)
        info = app.cases.require_usable(
            actor, case, "verify", details={"second_hash": hashes[1]}, **audit
        )
        audit |= {"case_ref": info.ref, "legal_basis": info.legal_basis, "purpose": info.purpose}
        try:
            faces = []
            for label, data in (("A", a), ("B", b)):
                found = app.pipeline.process(
                    decode_image(data, max_pixels=app.settings.max_image_pixels), enrol=False
                ).faces
                if not found:
                    raise NoFaceFound(f"no face found in image {label}")
                faces.append(found)
        except FacewardenError as exc:
            app.audit.record(
                actor,
                "verify",
                outcome="error",
                error=exc.message,
                details={"second_hash": hashes[1]},
                **audit,
            )
            raise
        best = [
            max(fs, key=lambda f: f.detection.box.width * f.detection.box.height) for fs in faces
        ]
        distance = float(np.linalg.norm(best[0].descriptor - best[1].descriptor))
        result = VerifyResult(
            distance <= threshold, round(distance, 4), threshold, len(faces[0]), len(faces[1])
        )
        problem = None
        with transaction(app.writes) as session:  # the quota, re-checked under the lock
            q = select(Case).where(Case.ref == info.ref)
            if session.get_bind().dialect.name == "postgresql":
                q = q.with_for_update()
            problem, code, checked = app.cases.problem(
                session, actor, info.ref, "verify", assigned=True, case=session.scalar(q)
            )
            if problem is None:
                app.audit.append(
                    session,
                    actor,
                    "verify",
                    details={
                        "second_hash": hashes[1],
                        "same": result.same,
                        "distance": result.distance,
                    },
                    **audit,
                )
        if problem is not None:
            fields = {
                k: v for k, v in audit.items() if k not in ("case_ref", "legal_basis", "purpose")
            }
            app.cases.refuse(actor, "verify", info.ref, checked, problem, code, **fields)
        return result


def filter_dict(where: IndexFilter) -> dict[str, list[str] | None]:
    """A search filter as recorded in the audit log."""
    return {
        "sources": sorted(where.sources) if where.sources is not None else None,
        "jurisdictions": sorted(where.jurisdictions) if where.jurisdictions is not None else None,
    }


@functools.lru_cache(maxsize=256)
def recheck_statement(searchable_only: bool, where: IndexFilter | None, count: int) -> Select:
    """The re-check query for ``count`` proposed face ids (bound as ``id0`` ... , then
    ``model_id`` and ``now``), built once per filter and count: plain columns, not ORM
    entities, and one bound parameter per id (an expanding ``IN`` is re-rendered at every
    execution)."""
    return (
        select(
            Face.id,
            Face.template,
            Face.face_index,
            Face.top,
            Face.right,
            Face.bottom,
            Face.left,
            Face.time_s,
            Face.track,
            Media.id.label("media_id"),
            Media.path,
            Media.sha256,
            Media.ingested_at,
            Source.name.label("source"),
            Source.jurisdiction,
        )
        .join(Media, Media.id == Face.media_id)
        .join(Source, Source.id == Media.source_id)
        .where(
            Face.id.in_([bindparam(f"id{n}") for n in range(count)]),
            Face.model_id == bindparam("model_id"),
            *filter_clauses(where),
            *(
                (Media.expires_at > bindparam("now"), Media.restricted.is_(False))
                if searchable_only
                else ()
            ),
        )
    )


def candidate(rank: int, distance: float, row: Row) -> Candidate:
    """A re-checked hit as a candidate; ``row`` has ``recheck_statement``'s columns, unpacked
    by position (faster than attribute access on a hot path)."""
    (face_id, _, face_index, top, right, bottom, left, time_s, track) = row[:9]
    (media_id, path, sha256, ingested_at, source, jurisdiction) = row[9:]
    return Candidate(
        rank=rank,
        distance=round(distance, 4),
        score=match_score(distance),
        face_id=face_id,
        media_id=media_id,
        media_path=path,
        source=source,
        box=[top, right, bottom, left],
        jurisdiction=jurisdiction,
        ingested_at=as_utc(ingested_at).astimezone(UTC).isoformat(),
        media_sha256=sha256,
        face_index=face_index,
        time_s=time_s,
        track=track,
    )


def filter_clauses(where: IndexFilter | None) -> list:
    """The same filter for the database re-check (the database has the last word)."""
    clauses = []
    if where is not None and where.sources is not None:
        clauses.append(Source.name.in_(sorted(where.sources)))
    if where is not None and where.jurisdictions is not None:
        clauses.append(Source.jurisdiction.in_(sorted(where.jurisdictions)))
    return clauses
