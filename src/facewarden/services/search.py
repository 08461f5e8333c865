"""1:N search and 1:1 verification. Every attempt, refused or failed, is logged."""

from __future__ import annotations

import functools
import hashlib
import math
from datetime import UTC
from typing import Any

import numpy as np
from sqlalchemy import Engine, Row, Select, bindparam, func, select
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.index.base import IndexFilter
from facewarden.adapters.storage.db import erasure_lock, transaction
from facewarden.adapters.storage.tables import (
    Case,
    CaseSearch,
    Face,
    Media,
    ProbeFace,
    SearchHit,
    Source,
    Subject,
)
from facewarden.calibration import Calibration, for_model
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.binding import probe_aad, probe_face_aad, template_aad
from facewarden.core.clock import as_utc, utcnow
from facewarden.core.errors import FacewardenError, InvalidInput, NoFaceFound, NotFound, Refused
from facewarden.core.filters import SearchFilter
from facewarden.core.limits import MAX_TOP_K
from facewarden.core.quality import probe_problems
from facewarden.core.schemas import Candidate, FaceMatches, FaceTemplate, SearchResult, VerifyResult
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.cases import CaseInfo, CaseService
from facewarden.services.index import IndexService
from facewarden.services.keyring import Keyring
from facewarden.services.keys import KeyService
from facewarden.services.models import Models
from facewarden.services.suppression import SuppressionList

MODEL_THRESHOLD = 0.6
SCORE_SCALE = 0.06
FETCH_MARGIN = 8  # extra proposals per search for hits the database re-check drops
GROUP_FETCH = 3
"""A grouped search re-checks up to this many faces per candidate wanted (faces of one
subject and near-duplicates fold into one candidate)."""
DUPLICATE_DISTANCE = 0.15
"""Faces of different media closer than this, with similar boxes, are one photo at
several resolutions (or re-encoded): near-duplicates. The same photo at half size measured
0.115 from the original; no impostor pair of the calibration (4.75 million) was closer
than 0.208; video ingest drops faces of one track within the same 0.15."""
DUPLICATE_BOX = 0.05
"""Largest difference of the box centres of near-duplicates, as a share of the image's
width and height."""
DUPLICATE_BOX_SCALE = 1.5
"""Largest ratio of the box sizes (relative to each image) of near-duplicates: the detector
draws boxes of a few fixed scales, so one face measured 23% and 29% of the width of one
photo at 560 and 910 pixels."""


def searchable_faces(session: Session) -> int:
    """The faces a search compares against: of media not expired and not restricted."""
    return (
        session.scalar(
            select(func.count(Face.id))
            .join(Media)
            .where(Media.expires_at > utcnow(), Media.restricted.is_(False))
        )
        or 0
    )


def match_score(distance: float) -> float:
    """Monotone 0..1 score, 0.5 at the model's operating point (0.6). Not a probability."""
    return round(1.0 / (1.0 + math.exp((distance - MODEL_THRESHOLD) / SCORE_SCALE)), 4)


def sig(x: float) -> float:
    """Three significant digits (estimates span many orders of magnitude)."""
    return float(f"{x:.3g}")


def annotate(
    calibration: Calibration | None,
    matches: list[FaceMatches],
    threshold: float,
    gallery_size: int,
) -> None:
    """Give each candidate the calibrated FMR at its distance and the expected number of
    strangers within that distance in a gallery of ``gallery_size``, and each probe face
    the expected number of false candidates for someone not in the gallery."""
    if calibration is None:
        return
    expected = sig(calibration.expected_strangers(threshold, gallery_size))
    for m in matches:
        m.expected_false_candidates = expected
        for c in m.candidates:
            c.fmr = sig(calibration.fmr(c.distance))
            c.expected_strangers = sig(calibration.expected_strangers(c.distance, gallery_size))


class SearchService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        single_reads: Engine,
        audit: AuditLog,
        guard: RoleGuard,
        keyring: Keyring,
        models: Models,
        index: IndexService,
        keys: KeyService,
        cases: CaseService,
        suppression: SuppressionList,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.writes = writes
        self.single_reads = single_reads
        self.audit = audit
        self.guard = guard
        self.keyring = keyring
        self.models = models
        self.index = index
        self.keys = keys
        self.cases = cases
        self.suppression = suppression

    def search(
        self,
        actor: Actor,
        probe: bytes,
        *,
        case: str | None,
        probe_name: str = "probe",
        top_k: int | None = None,
        threshold: float | None = None,
        where: SearchFilter | None = None,
        allow_low_quality: bool = False,
    ) -> SearchResult:
        """Search every face of ``probe`` that passes the probe quality gate; ``where``
        limits candidates to some sources or jurisdictions (the filter is recorded in the
        audit log; a source no one registered is refused as ``invalid_filter``).

        A face below the quality bar is reported with its problems and not searched; a probe
        with no usable face is refused (``low_quality_probe``) unless ``allow_low_quality``
        (the override is logged with the problems it overrode). A probe with no face at all
        is logged and refused (``no_face``). Neither uses the case's quota."""
        top_k = self.settings.top_k if top_k is None else top_k
        requested = threshold
        threshold = self.settings.threshold if threshold is None else threshold
        if not 0 < threshold <= 2 or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"threshold must be in (0, 2] and top-k in 1..{MAX_TOP_K}")
        probe_hash = hashlib.sha256(probe).hexdigest()
        audit: dict[str, Any] = {
            "probe_hash": probe_hash,
            "threshold": threshold,
            "model_id": self.models.model_id,
        }
        self.guard.authorize(actor, "search", "investigator", case_ref=case, **audit)
        info = self.cases.require_usable(
            actor,
            case,
            "search",
            **{k: v for k, v in audit.items() if k != "case_ref"},
        )
        audit |= {"case_ref": info.ref, "legal_basis": info.legal_basis, "purpose": info.purpose}
        try:
            threshold, policy = self.threshold_policy(info, requested)
        except FacewardenError as exc:
            outcome = "refused" if isinstance(exc, Refused) else "error"
            self.audit.record(actor, "search", outcome=outcome, error=exc.message, **audit)
            raise
        audit["threshold"] = threshold
        try:
            index_filter = self.index_filter(where)
            analysed = self.models.analyse_probe(probe)
            faces = analysed.faces
            if not faces:
                raise NoFaceFound("no face found in the probe")
            problems = [self.quality_problems(f.quality) for f in faces]
            if all(problems) and not allow_low_quality:
                why = "; ".join(f"face {n}: {', '.join(p)}" for n, p in enumerate(problems))
                self.audit.record(
                    actor,
                    "search",
                    outcome="refused",
                    error=f"low_quality_probe: {why}",
                    details={"quality_problems": problems},
                    **audit,
                )
                raise Refused(
                    f"search refused: no probe face meets the quality bar ({why}); "
                    "use a better photo, or override explicitly (--allow-low-quality, logged)",
                    code="low_quality_probe",
                )
            matches = [
                self.match(f, top_k, threshold, where=index_filter, group=True)
                if allow_low_quality or not p
                else FaceMatches(f.detection.box.as_list(), f.quality.as_dict(), [])
                for f, p in zip(faces, problems, strict=True)
            ]
            for m, p in zip(matches, problems, strict=True):
                m.quality_problems = p
                m.searched = allow_low_quality or not p
        except FacewardenError as exc:
            if exc.code != "low_quality_probe":
                self.audit.record(actor, "search", outcome="error", error=exc.message, **audit)
            raise
        extra: dict = {"threshold_policy": policy, "detector": self.settings.detector_setting}
        if where is not None:
            extra["filter"] = where.as_dict()
        if analysed.notes:
            extra["notes"] = analysed.notes
        if any(problems):
            extra["quality_problems"] = problems
            extra["allow_low_quality"] = allow_low_quality
        probe_crops: list[bytes | None] = [*analysed.crops] or [None] * len(matches)
        crops = [crop if m.searched else None for crop, m in zip(probe_crops, matches, strict=True)]
        search_id, size, seq = self.record(
            actor,
            info.ref,
            probe_name,
            probe_hash,
            faces,
            matches,
            top_k,
            audit,
            extra=extra,
            probe_crops=crops,
        )
        calibration = for_model(self.models.model_id)
        annotate(calibration, matches, threshold, size)
        return SearchResult(
            probe_name,
            probe_hash,
            info.ref,
            threshold,
            size,
            self.models.model_id,
            matches,
            seq,
            search_id,
            analysed.notes,
            threshold_policy=policy,
            detector=self.settings.detector_setting,
            calibration=calibration.summary() if calibration else None,
        )

    def index_filter(self, where: SearchFilter | None) -> IndexFilter | None:
        """The index's filter for a search filter; ``InvalidInput`` (``invalid_filter``)
        when it names a source that is not registered (a typo would otherwise read as "no
        candidate")."""
        if where is None:
            return None
        if where.sources is not None:
            with self.sessions() as session:
                known = set(
                    session.scalars(select(Source.name).where(Source.name.in_(where.sources)))
                )
            unknown = sorted(where.sources - known)
            if unknown:
                raise InvalidInput(
                    f"source filter: no source {', '.join(map(repr, unknown[:5]))} is registered",
                    code="invalid_filter",
                )
        return IndexFilter(where.sources, where.jurisdictions)

    def threshold_policy(
        self, info: CaseInfo, requested: float | None
    ) -> tuple[float, dict[str, object]]:
        """The distance threshold of a search and how it was chosen (recorded in the audit
        event): the threshold the request names; else the case's policy, else the
        deployment's: ``fixed`` (the configured distance) or ``fpir`` (the largest distance
        whose calibrated gallery size x FMR is at most the target FPIR, never looser than
        the configured distance). Under a case's own fpir policy a request may name a
        stricter threshold, not a looser one (``Refused``)."""
        settings = self.settings
        name = info.threshold_policy or settings.threshold_policy
        set_by = "case" if info.threshold_policy else "settings"
        if requested is not None and info.threshold_policy != "fpir":
            return requested, {"policy": "fixed", "set_by": "request"}
        if name != "fpir":
            return settings.threshold, {"policy": "fixed", "set_by": set_by}
        calibration = for_model(self.models.model_id)
        if calibration is None:
            raise InvalidInput(
                f"no calibration for template space {self.models.model_id}: the fpir threshold "
                "policy is unavailable; give a --threshold"
            )
        target = info.target_fpir or settings.target_fpir
        with self.sessions() as session:
            size = searchable_faces(session)
        chosen = calibration.policy_threshold(target, size, settings.threshold)
        if requested is not None:
            # A case's FPIR policy binds its searches: a stricter distance may be asked
            # for, a looser one is refused.
            if requested > chosen + 1e-9:
                raise Refused(
                    f"case {info.ref!r} searches by target FPIR {target:g}: at this gallery "
                    f"size its threshold is {chosen}; a looser threshold ({requested}) is "
                    "refused"
                )
            return requested, {
                "policy": "fixed",
                "set_by": "request",
                "case_target_fpir": target,
                "case_threshold": chosen,
            }
        return chosen, {
            "policy": "fpir",
            "set_by": set_by,
            "target_fpir": target,
            "gallery_size": size,
            "expected_false_candidates": sig(size * calibration.fmr(chosen)),
            # False when even the table's smallest distance cannot be shown to meet the
            # target at this gallery size (its FMR there is an upper bound).
            "within_target": size * calibration.fmr(chosen) <= target,
            "calibration": calibration.source.get("recipe_id"),
        }

    def quality_problems(self, quality) -> list[str]:
        """Why a probe face is below the configured quality bar (empty: it is not)."""
        settings = self.settings
        return probe_problems(
            quality,
            min_face_px=settings.probe_min_face_px,
            min_blur=settings.probe_min_blur,
            max_yaw=settings.probe_max_yaw,
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
        probe_crops: list[bytes | None] | None = None,
        probe_times: list[float | None] | None = None,
    ) -> tuple[int, int, int]:
        """Log the search and keep its record with the case: hits, probe hash, the crop of
        each searched probe face (encrypted, for the review) and (if the case asks) the
        probe's templates. The quota is re-checked under the write lock."""

        problem = None
        with transaction(self.writes) as session:
            # Held shared like ingest: a key rotation's final check (exclusive) cannot pass
            # between this transaction choosing the current key and committing under it.
            erasure_lock(session, shared=True)
            q = select(Case).where(Case.ref == ref)
            if session.get_bind().dialect.name == "postgresql":
                q = q.with_for_update()
            case = session.scalar(q)
            problem, code, info = self.cases.problem(
                session, actor, ref, "search", assigned=True, case=case
            )
            if problem is None:
                if case is None:  # problem() refuses a missing case
                    raise NotFound(f"no case {ref!r}")
                size = searchable_faces(session)
                event = self.audit.append(
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
                                    | (
                                        {"grouped": c.grouped_face_ids}
                                        if c.grouped_face_ids
                                        else {}
                                    )
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
                cipher = self.keys.writing(session)
                if case.keep_probe_templates and faces:
                    vecs = np.stack([f.descriptor for f in faces]).astype("<f4")
                    templates = cipher.encrypt(vecs.tobytes(), probe_aad(ref, probe_hash))
                record = CaseSearch(
                    case_id=case.id,
                    probe_sha256=probe_hash,
                    probe_name=probe_name,
                    searched_by=actor.name,
                    searched_at=utcnow(),
                    audit_seq=event.seq,
                    faces=len(faces),
                    probe_templates=templates,
                    key_id=cipher.key_id if templates is not None else None,
                )
                session.add(record)
                session.flush()
                times = probe_times or [None] * len(matches)
                writer = cipher
                session.add_all(
                    ProbeFace(
                        search_id=record.id,
                        face_index=n,
                        box=m.box,
                        quality=m.quality,
                        quality_problems=m.quality_problems,
                        time_s=t,
                        data=writer.encrypt(crop, probe_face_aad(record.id, n)),
                        key_id=writer.key_id,
                    )
                    for n, (m, crop, t) in enumerate(
                        zip(matches, probe_crops or [None] * len(matches), times, strict=True)
                    )
                    if crop is not None
                )
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
            self.cases.refuse(actor, "search", ref, info, problem, code, **fields)
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
        group: bool = False,
    ) -> FaceMatches:
        """Index proposes, the database disposes: every hit is re-checked and re-scored.

        The index's distances are exact (every backend ranks on full vectors), so it is asked
        for ``top_k`` plus a small margin for hits the database drops (erased while the index
        lags, restricted, expired), and the database re-checks the nearest ``top_k`` of them
        first, then more only if it dropped some; when every proposal was within the
        threshold and too many were dropped, the index is asked again for four times as many.

        ``searchable_only=False`` (subject rights) also finds restricted and expired faces
        that are still held; ``exact`` has the index compare every vector.

        ``group``: candidates are people, not photos: faces linked to one subject are one
        candidate (its best face, with how many faces matched), and near-duplicate faces of
        different media (the same photo at several resolutions) fold into the candidate they
        duplicate; up to ``GROUP_FETCH x top_k`` faces are re-checked for the grouping."""
        wanted = top_k * GROUP_FETCH if group else top_k
        scored = self._scored(face, wanted, threshold, searchable_only, where, exact)
        if group:
            candidates, collapsed = group_hits(scored, top_k)
        else:
            candidates = [candidate(rank, d, row) for rank, (d, row, _) in enumerate(scored, 1)]
            collapsed = 0
        return FaceMatches(
            face.detection.box.as_list(),
            face.quality.as_dict(),
            candidates,
            duplicates_collapsed=collapsed,
        )

    def _scored(
        self,
        face: FaceTemplate,
        top_k: int,
        threshold: float,
        searchable_only: bool,
        where: IndexFilter | None,
        exact: bool,
    ) -> list[tuple[float, Row, np.ndarray]]:
        """The nearest ``top_k`` re-checked hits: (distance, row, template), nearest first."""
        self.index.catch_up()
        index = self.index.vectors
        # Not clamped to the index's size: every backend pads a short answer, and counting
        # the index is a COUNT(*) on pgvector. It is counted only when widening.
        fetch = top_k + FETCH_MARGIN
        checked: set[int] = set()
        scored: list[tuple[float, Row, np.ndarray]] = []
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
        return scored[:top_k]

    def _recheck(
        self,
        face_ids: list[int],
        probe: np.ndarray,
        threshold: float,
        searchable_only: bool,
        where: IndexFilter | None,
    ) -> list[tuple[float, Row, np.ndarray]]:
        """(distance, row, template) of each proposed face the database still holds and
        admits, re-scored from its decrypted template, within ``threshold``."""

        statement = recheck_statement(searchable_only, where, len(face_ids))
        with self.single_reads.connect() as conn:
            params: dict[str, object] = {f"id{n}": face_id for n, face_id in enumerate(face_ids)}
            params |= {"model_id": self.models.model_id, "now": utcnow()}
            rows = conn.execute(statement, params).all()
            if not rows:
                return []
            decrypt = self.keyring.cipher.decrypt_template
            vecs = np.stack(
                [decrypt(r.template, template_aad(r.sha256, r.face_index), r.key_id) for r in rows]
            )
            # Erased people stay erased: faces near an erased person's templates (review
            # candidates, later ingest) are withheld from every search.
            withheld = (
                self.suppression.withheld(conn, [r.id for r in rows], vecs)
                if searchable_only
                else np.zeros(len(rows), dtype=bool)
            )
        dist = np.linalg.norm(vecs - probe, axis=1)
        return [
            (float(d), r, v)
            for d, w, r, v in zip(dist, withheld, rows, vecs, strict=True)
            if d <= threshold and not w
        ]

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
        threshold = self.settings.threshold if threshold is None else threshold
        if not 0 < threshold <= 2:
            raise InvalidInput("threshold must be in (0, 2]")
        hashes = [hashlib.sha256(x).hexdigest() for x in (a, b)]
        audit: dict = {
            "threshold": threshold,
            "model_id": self.models.model_id,
            "probe_hash": hashes[0],
        }
        self.guard.authorize(actor, "verify", "investigator", case_ref=case, **audit)
        info = self.cases.require_usable(
            actor, case, "verify", details={"second_hash": hashes[1]}, **audit
        )
        audit |= {"case_ref": info.ref, "legal_basis": info.legal_basis, "purpose": info.purpose}
        try:
            faces = []
            for label, data in (("A", a), ("B", b)):
                found = self.models.analyse_probe(data).faces
                if not found:
                    raise NoFaceFound(f"no face found in image {label}")
                faces.append(found)
        except FacewardenError as exc:
            self.audit.record(
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
        with transaction(self.writes) as session:  # the quota, re-checked under the lock
            q = select(Case).where(Case.ref == info.ref)
            if session.get_bind().dialect.name == "postgresql":
                q = q.with_for_update()
            problem, code, checked = self.cases.problem(
                session, actor, info.ref, "verify", assigned=True, case=session.scalar(q)
            )
            if problem is None:
                self.audit.append(
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
            self.cases.refuse(actor, "verify", info.ref, checked, problem, code, **fields)
        return result


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
            Face.key_id,
            Media.width,
            Media.height,
            Face.subject_id,
            Subject.reference.label("subject"),
        )
        .join(Media, Media.id == Face.media_id)
        .join(Source, Source.id == Media.source_id)
        .outerjoin(Subject, Subject.id == Face.subject_id)
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
    (media_id, path, sha256, ingested_at, source, jurisdiction) = row[9:15]
    subject_id, subject = row[18:20]
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
        subject=subject,
        subject_id=subject_id,
    )


def near_duplicates(a: tuple[float, Row, np.ndarray], b: tuple[float, Row, np.ndarray]) -> bool:
    """Faces of two different still images that are one photo at two resolutions (or
    re-encoded): templates within ``DUPLICATE_DISTANCE`` and boxes at the same place and of
    about the same size relative to each image."""
    ra, rb = a[1], b[1]
    if ra.media_id == rb.media_id or ra.time_s is not None or rb.time_s is not None:
        return False
    if float(np.linalg.norm(a[2] - b[2])) >= DUPLICATE_DISTANCE:
        return False

    def rel(r: Row) -> tuple[float, float, float]:
        w, h = max(r.width, 1), max(r.height, 1)
        return (r.left + r.right) / 2 / w, (r.top + r.bottom) / 2 / h, max(r.right - r.left, 1) / w

    (xa, ya, sa), (xb, yb, sb) = rel(ra), rel(rb)
    return (
        abs(xa - xb) < DUPLICATE_BOX
        and abs(ya - yb) < DUPLICATE_BOX
        and max(sa, sb) / min(sa, sb) <= DUPLICATE_BOX_SCALE
    )


def group_hits(
    scored: list[tuple[float, Row, np.ndarray]], top_k: int
) -> tuple[list[Candidate], int]:
    """Candidates per person, nearest first: a subject's faces are one candidate; a face
    that near-duplicates a face of a candidate already formed folds into it. Returns the
    first ``top_k`` candidates and how many near-duplicate faces were folded into them."""
    groups: list[list[tuple[float, Row, np.ndarray]]] = []
    duplicates: list[int] = []
    by_subject: dict[int, int] = {}
    for hit in scored:
        subject_id = hit[1].subject_id
        at = by_subject.get(subject_id) if subject_id is not None else None
        dup = False
        if at is None:
            for n, members in enumerate(groups):
                if any(near_duplicates(m, hit) for m in members):
                    at, dup = n, True
                    break
        else:
            dup = any(near_duplicates(m, hit) for m in groups[at])
        if at is None:
            groups.append([hit])
            duplicates.append(0)
            at = len(groups) - 1
        else:
            groups[at].append(hit)
            duplicates[at] += dup
        if subject_id is not None:
            by_subject.setdefault(subject_id, at)
    out = []
    for rank, (members, dups) in enumerate(zip(groups[:top_k], duplicates, strict=False), 1):
        best = members[0]
        c = candidate(rank, best[0], best[1])
        if c.subject is None:  # a near-duplicate may carry the subject
            linked = next((m[1] for m in members if m[1].subject_id is not None), None)
            if linked is not None:
                c.subject, c.subject_id = linked.subject, linked.subject_id
        c.faces_matched = len(members)
        c.duplicates_collapsed = dups
        c.grouped_face_ids = [m[1].id for m in members[1:]]
        out.append(c)
    return out, sum(duplicates[:top_k])


def filter_clauses(where: IndexFilter | None) -> list:
    """The same filter for the database re-check (the database has the last word)."""
    clauses = []
    if where is not None and where.sources is not None:
        clauses.append(Source.name.in_(sorted(where.sources)))
    if where is not None and where.jurisdictions is not None:
        clauses.append(Source.jurisdiction.in_(sorted(where.jurisdictions)))
    return clauses
