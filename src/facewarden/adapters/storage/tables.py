"""The system of record: SQLAlchemy 2 models (schema changes go through Alembic)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


UTC_DT = DateTime(timezone=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    roles: Mapped[str] = mapped_column(String(200))
    """Comma-separated roles: admin, operator, investigator, reviewer, dpo, auditor."""
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTC_DT)
    token_issued_at: Mapped[datetime | None] = mapped_column(UTC_DT)
    """When the current token was issued (it expires ``token_days`` later)."""
    last_used_at: Mapped[datetime | None] = mapped_column(UTC_DT)
    """Last successful authentication (kept to the minute)."""


class ConsoleSession(Base):
    """A console log-in. The browser's cookie holds a random id; only its hash is here.
    Log-out deletes the row; token rotation and disabling the user delete all of theirs."""

    __tablename__ = "console_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    """The user's token hash at log-in: a rotated token ends the session even if the row
    survived."""
    created_at: Mapped[datetime] = mapped_column(UTC_DT)
    expires_at: Mapped[datetime] = mapped_column(UTC_DT)


class Source(Base):
    __tablename__ = "sources"
    __table_args__ = (
        CheckConstraint("retention_days > 0", name="ck_sources_retention_positive"),
        CheckConstraint("length(lawful_basis) > 0", name="ck_sources_lawful_basis"),
        CheckConstraint("length(purpose) > 0", name="ck_sources_purpose"),
        CheckConstraint("length(jurisdiction) = 2", name="ck_sources_jurisdiction"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    lawful_basis: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    jurisdiction: Mapped[str] = mapped_column(String(2), index=True)
    retention_days: Mapped[float] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTC_DT)
    subject_fields: Mapped[list | None] = mapped_column(JSON)
    """Metadata fields an ingest manifest may record about this source's subjects (the
    fields the source is lawfully allowed to hold); None: none."""


class Media(Base):
    __tablename__ = "media"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused after deletion
    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(10), default="image")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[datetime] = mapped_column(UTC_DT)
    expires_at: Mapped[datetime] = mapped_column(UTC_DT, nullable=False, index=True)
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[Source] = relationship()
    faces: Mapped[list[Face]] = relationship(
        back_populates="media", cascade="all, delete-orphan", passive_deletes=True
    )


class Face(Base):
    __tablename__ = "faces"
    __table_args__ = (
        UniqueConstraint("media_id", "face_index", name="uq_faces_media_index"),
        {"sqlite_autoincrement": True},  # a deleted face's id never names another face
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    face_index: Mapped[int] = mapped_column(Integer)
    top: Mapped[int] = mapped_column(Integer)
    right: Mapped[int] = mapped_column(Integer)
    bottom: Mapped[int] = mapped_column(Integer)
    left: Mapped[int] = mapped_column(Integer)
    quality: Mapped[dict] = mapped_column(JSON)
    model_id: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str] = mapped_column(String(16))
    template: Mapped[bytes] = mapped_column(LargeBinary)
    """AES-256-GCM: 12-byte nonce + ciphertext + tag of the float32 descriptor."""
    time_s: Mapped[float | None] = mapped_column(Float)
    """For a face from a video: its time in the video, seconds."""
    track: Mapped[int | None] = mapped_column(Integer)
    subject_id: Mapped[int | None] = mapped_column(
        ForeignKey("subjects.id", ondelete="SET NULL"), index=True
    )
    """The source system's subject this face belongs to (from an ingest manifest)."""
    """For a face from a video: the face track it was chosen from."""
    media: Mapped[Media] = relationship(back_populates="faces")


class Subject(Base):
    """A person as the source system knows them (a custody record, a case file): the faces
    linked to it are one gallery identity."""

    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("source_id", "reference"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    reference: Mapped[str] = mapped_column(String(200))
    fields: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTC_DT)
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)


class FaceCrop(Base):
    __tablename__ = "face_crops"
    face_id: Mapped[int] = mapped_column(
        ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)
    """Encrypted JPEG of the aligned 150x150 chip."""
    key_id: Mapped[str | None] = mapped_column(String(16))
    """Id of the key that sealed ``data`` (None only for crops stored before ids were kept)."""


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(100), unique=True)
    purpose: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(Text)
    authorisation: Mapped[str] = mapped_column(Text)
    offence: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="open")
    opened_by: Mapped[str] = mapped_column(String(100))
    opened_at: Mapped[datetime] = mapped_column(UTC_DT)
    expires_at: Mapped[datetime] = mapped_column(UTC_DT, nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(UTC_DT)
    search_quota: Mapped[int] = mapped_column(Integer, default=100)
    keep_probe_templates: Mapped[bool] = mapped_column(Boolean, default=False)
    threshold_policy: Mapped[str | None] = mapped_column(String(10))
    """``fixed`` or ``fpir``; None: the deployment's default (settings)."""
    target_fpir: Mapped[float | None] = mapped_column(Float)
    members: Mapped[list[CaseMember]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )


class CaseMember(Base):
    """A person assigned to a case: investigators may search under it; investigators and
    reviewers (``role``) may read its records and decide on its candidates."""

    __tablename__ = "case_members"
    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    user_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    added_by: Mapped[str] = mapped_column(String(100))
    added_at: Mapped[datetime] = mapped_column(UTC_DT)
    role: Mapped[str] = mapped_column(String(20), default="investigator")
    """``investigator`` or ``reviewer``: the capacity in which the user is assigned."""


class CaseSearch(Base):
    """One search under a case. The probe image is never kept: its hash is, and its
    templates (encrypted) only while the case lives and only if the case asks for it."""

    __tablename__ = "case_searches"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    probe_sha256: Mapped[str] = mapped_column(String(64))
    probe_name: Mapped[str] = mapped_column(Text)
    searched_by: Mapped[str] = mapped_column(String(100))
    searched_at: Mapped[datetime] = mapped_column(UTC_DT)
    audit_seq: Mapped[int] = mapped_column(Integer)
    faces: Mapped[int] = mapped_column(Integer)
    probe_templates: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(16))
    """Id of the key that sealed ``probe_templates``."""
    templates_wiped_at: Mapped[datetime | None] = mapped_column(UTC_DT)


class ProbeFace(Base):
    """The crop of one searched probe face, kept with its case so a reviewer sees what was
    searched. AES-256-GCM, bound to the search and the face's position; deleted when the
    case is closed, expires or is purged (the probe image itself is never stored)."""

    __tablename__ = "probe_faces"
    __table_args__ = (UniqueConstraint("search_id", "face_index", name="uq_probe_face"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[int] = mapped_column(
        ForeignKey("case_searches.id", ondelete="CASCADE"), index=True
    )
    face_index: Mapped[int] = mapped_column(Integer)
    box: Mapped[list] = mapped_column(JSON)
    quality: Mapped[dict] = mapped_column(JSON)
    quality_problems: Mapped[list] = mapped_column(JSON)
    time_s: Mapped[float | None] = mapped_column(Float)
    """For a probe video: the time of the track's best frame."""
    data: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(16))
    """The template key the crop is sealed under (checked at every decryption)."""


class SearchHit(Base):
    """A candidate a search returned. Names the face by media hash and position as well,
    so the record stays meaningful after the face itself is erased."""

    __tablename__ = "search_hits"
    __table_args__ = (Index("ix_search_hits_media_face", "media_sha256", "face_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[int] = mapped_column(
        ForeignKey("case_searches.id", ondelete="CASCADE"), index=True
    )
    probe_face: Mapped[int] = mapped_column(Integer)
    face_id: Mapped[int] = mapped_column(Integer, index=True)
    media_sha256: Mapped[str] = mapped_column(String(64))
    face_index: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    distance: Mapped[float] = mapped_column(Float)


class Confirmation(Base):
    """One person's decision on one candidate; two people make an identification."""

    __tablename__ = "confirmations"
    __table_args__ = (
        UniqueConstraint("search_id", "face_id", "user_name", name="uq_confirmation_once"),
        CheckConstraint("decision IN ('confirm', 'reject')", name="ck_confirmation_decision"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[int] = mapped_column(
        ForeignKey("case_searches.id", ondelete="CASCADE"), index=True
    )
    face_id: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(10))
    user_name: Mapped[str] = mapped_column(String(100))
    roles: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTC_DT)
    audit_seq: Mapped[int] = mapped_column(Integer)


class SubjectRequest(Base):
    """A data subject's access or erasure request, with its receipt. An erasure keeps the
    person's template (encrypted) as a suppression entry so later ingest skips their face."""

    __tablename__ = "subject_requests"
    __table_args__ = (
        CheckConstraint("kind IN ('access', 'erasure')", name="ck_subject_request_kind"),
        Index("ix_subject_requests_audit_seq", "audit_seq"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    reference: Mapped[str | None] = mapped_column(String(200))
    selfie_sha256: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float] = mapped_column(Float)
    handled_by: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UTC_DT)
    completed_at: Mapped[datetime | None] = mapped_column(UTC_DT)
    receipt: Mapped[dict | None] = mapped_column(JSON)
    suppression_template: Mapped[bytes | None] = mapped_column(LargeBinary)
    """AES-256-GCM template (erasure only); bound to this request by its AAD."""
    key_id: Mapped[str | None] = mapped_column(String(16))
    """Id of the key that sealed ``suppression_template``."""
    audit_seq: Mapped[int | None] = mapped_column(Integer)


class AuditEvent(Base):
    """Append-only, hash-chained. Holds no template and no image, ever."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_case_ref", "case_ref"),
        Index("ix_audit_action_seq", "action", "seq"),  # the receipts list (few among many)
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(60))
    case_ref: Mapped[str | None] = mapped_column(String(100))
    legal_basis: Mapped[str | None] = mapped_column(Text)
    purpose: Mapped[str | None] = mapped_column(Text)
    probe_hash: Mapped[str | None] = mapped_column(String(64))
    gallery_size: Mapped[int | None] = mapped_column(Integer)
    model_id: Mapped[str | None] = mapped_column(String(200))
    threshold: Mapped[float | None] = mapped_column(Float)
    details: Mapped[str] = mapped_column(Text)
    """Canonical JSON: result face ids with distances and ranks, counts, targets."""
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    chain: Mapped[int] = mapped_column(Integer, default=1)
    """1: ``hash`` is SHA-256 of the record (logs written before the audit key); 2: HMAC-SHA256
    under the audit key, which the database does not hold."""


class EncryptionKey(Base):
    """The keys the data is (or was) encrypted under, by id: which one is current, which one
    a rotation is retiring. Holds no key material."""

    __tablename__ = "encryption_keys"
    __table_args__ = (
        CheckConstraint("state IN ('current', 'retiring', 'retired')", name="ck_key_state"),
    )
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    state: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTC_DT)
    retired_at: Mapped[datetime | None] = mapped_column(UTC_DT)
