"""Who is acting, and with which roles."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "operator", "investigator", "reviewer", "dpo", "auditor")
SINGLE_OPERATOR_ROLES = ("admin", "operator", "investigator", "dpo")
OVERSIGHT = ("dpo", "auditor")
"""Who may read any case's records (searches, candidates, crops, decisions, exports), open
or closed; each such read is logged."""
MEMBER_ROLES = ("investigator", "reviewer")
"""Roles that are assigned to cases and read only the cases they are assigned to."""


@dataclass(frozen=True)
class Actor:
    name: str
    roles: frozenset[str]

    def has(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)

    @property
    def role_label(self) -> str:
        return ",".join(sorted(self.roles))
