"""Who is acting, and with which roles."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "operator", "investigator", "reviewer", "dpo", "auditor")
SINGLE_OPERATOR_ROLES = ("admin", "operator", "investigator", "dpo")


@dataclass(frozen=True)
class Actor:
    name: str
    roles: frozenset[str]

    def has(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)

    @property
    def role_label(self) -> str:
        return ",".join(sorted(self.roles))
