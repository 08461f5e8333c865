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


class Media(Base):
    __tablename__ = "media"
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
    __table_args__ = (UniqueConstraint("media_id", "face_index", name="uq_faces_media_index"),)
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
    media: Mapped[Media] = relationship(back_populates="faces")


class FaceCrop(Base):
    __tablename__ = "face_crops"
    face_id: Mapped[int] = mapped_column(
        ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)
    """Encrypted JPEG of the aligned 150x150 chip."""


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


class AuditEvent(Base):
    """Append-only, hash-chained. Holds no template and no image, ever."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_case_ref", "case_ref"),)
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
