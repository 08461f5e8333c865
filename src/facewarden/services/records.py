"""Transparency: the public processing notice and the records of processing activities."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.tables import Face, Media, Source
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.ports import ReportRenderer
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.cases import CaseService
from facewarden.services.confirmations import ConfirmationService
from facewarden.services.models import Models
from facewarden.services.sources import SourceService
from facewarden.services.subjects import SubjectService


class RecordsService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
        models: Models,
        sources: SourceService,
        cases: CaseService,
        confirmations: ConfirmationService,
        subjects: SubjectService,
        reports: ReportRenderer,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.audit = audit
        self.guard = guard
        self.models = models
        self.sources = sources
        self.cases = cases
        self.confirmations = confirmations
        self.subjects = subjects
        self.reports = reports

    def notice_data(self) -> dict[str, Any]:
        s = self.settings
        sources = self.sources.list()
        return {
            "controller_name": s.controller_name or "(not configured: FACEWARDEN_CONTROLLER_NAME)",
            "controller_contact": s.controller_contact
            or "(not configured: FACEWARDEN_CONTROLLER_CONTACT)",
            "dpo_contact": s.dpo_contact or "(not configured: FACEWARDEN_DPO_CONTACT)",
            "purposes": sorted({src.purpose for src in sources}),
            "legal_bases": sorted({src.lawful_basis for src in sources}),
            "sources": [
                {
                    "name": src.name,
                    "jurisdiction": src.jurisdiction,
                    "note": src.note,
                    "retention_days": src.retention_days,
                }
                for src in sources
            ],
            "threshold": s.threshold,
            "model": self.models.model_id,
        }

    def notice(self) -> str:
        """The public notice (Markdown), rendered from configuration and registered sources."""
        return self.reports.notice_markdown(self.notice_data())

    def report(self, actor: Actor) -> dict[str, Any]:
        """Records of processing: holdings per source and jurisdiction, searches and
        identifications per case, rights requests with their time to completion."""
        self.guard.authorize(actor, "report", "dpo", "auditor", "admin")
        with self.sessions() as session:
            per_source = session.execute(
                select(
                    Source.name,
                    Source.jurisdiction,
                    Source.lawful_basis,
                    Source.retention_days,
                    func.count(func.distinct(Media.id)),
                    func.count(Face.id),
                )
                .outerjoin(Media, Media.source_id == Source.id)
                .outerjoin(Face, Face.media_id == Media.id)
                .group_by(Source.id)
                .order_by(Source.name)
            ).all()
        sources: list[dict[str, Any]] = [
            {
                "source": name,
                "jurisdiction": cc,
                "lawful_basis": basis,
                "retention_days": days,
                "media": media,
                "faces": faces,
            }
            for name, cc, basis, days, media, faces in per_source
        ]
        jurisdictions: dict[str, dict[str, int]] = {}
        for row in sources:
            j = jurisdictions.setdefault(row["jurisdiction"], {"media": 0, "faces": 0})
            j["media"] += row["media"]
            j["faces"] += row["faces"]
        cases: list[dict[str, Any]] = []
        for info in self.cases.all():
            states = self.confirmations.states(info.ref)
            cases.append(
                {
                    "case": info.ref,
                    "status": info.status,
                    "legal_basis": info.legal_basis,
                    "investigators": info.investigators,
                    "searches": info.searches,
                    "search_quota": info.search_quota,
                    "identifications": sum(s.status == "identified" for s in states),
                    "rejected": sum(s.status == "rejected" for s in states),
                }
            )
        report: dict[str, Any] = {
            "sources": sources,
            "jurisdictions": jurisdictions,
            "cases": cases,
            "identifications": sum(c["identifications"] for c in cases),
            "rights_requests": self.subjects.request_records(),
            "audit_head": self.audit.head(),
        }
        self.audit.record(
            actor,
            "report",
            details={
                "sources": len(sources),
                "cases": len(cases),
                "rights_requests": len(report["rights_requests"]),
            },
        )
        return report
