"""The vector index interface. An index is a derived cache of the database's templates.

Every backend (in-process FAISS, pgvector, Qdrant) implements ``VectorIndex`` and passes the
one shared behaviour suite in ``tests/test_index_backends.py``. The search service re-checks
every hit against the database, so a backend that lags behind a deletion can only return
fewer candidates, never a deleted face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class FaceLabel:
    """What a filter can select a face by (kept in the index beside its vector)."""

    source: str
    jurisdiction: str


@dataclass(frozen=True)
class IndexFilter:
    """Only faces whose source and jurisdiction are in these sets (None: any)."""

    sources: frozenset[str] | None = None
    jurisdictions: frozenset[str] | None = None

    def admits(self, label: FaceLabel) -> bool:
        return (self.sources is None or label.source in self.sources) and (
            self.jurisdictions is None or label.jurisdiction in self.jurisdictions
        )

    def constraints(self) -> list[tuple[str, list[str]]]:
        """(field, allowed values) for each field the filter constrains."""
        pairs = (("source", self.sources), ("jurisdiction", self.jurisdictions))
        return [(name, sorted(values)) for name, values in pairs if values is not None]

    @property
    def empty(self) -> bool:
        """Selects nothing (an empty set was given)."""
        return self.sources == frozenset() or self.jurisdictions == frozenset()


@dataclass
class PurgeReport:
    """What a physical purge did: the bytes of removed vectors are gone once it returns."""

    backend: str
    removed_since_last_purge: int
    actions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "removed_since_last_purge": self.removed_since_last_purge,
            "actions": self.actions,
        }


class VectorIndex(Protocol):
    name: str

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[FaceLabel]) -> None:
        """Add (or replace) vectors under int64 ids, each with its filter label."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids at once (never returned again); returns how many were present."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        where: IndexFilter | None = None,
        *,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest ``k`` per query among the faces ``where`` admits: (Euclidean distances,
        ids), ids -1 where fewer exist. ``exact`` compares every admitted vector (subject
        rights must find every face of a person, not most of them)."""
        ...

    def ids(self) -> np.ndarray:
        """Every id held, as int64."""
        ...

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of ``ids`` held, in any order: the consistency check
        compares a sample of them with the database's templates."""
        ...

    def reset(self) -> None: ...

    def save(self) -> None:
        """Persist atomically (a crash leaves the previous or the new state, never half)."""
        ...

    def purge(self) -> PurgeReport:
        """Physically erase the bytes of removed vectors (VACUUM, overwrite, optimise)."""
        ...

    def describe(self) -> dict[str, object]:
        """Backend, mode and size, for ``stats`` and ``index info``."""
        ...

    def close(self) -> None:
        """Release connections, locks and mapped files."""
        ...


def empty_result(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), np.inf, np.float32), np.full((n, k), -1, np.int64)


def pad_result(rows: list[list[tuple[float, int]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distance, id) lists per query, nearest first, padded to ``k`` with (inf, -1)."""
    dists, ids = empty_result(len(rows), k)
    for i, row in enumerate(rows):
        for j, (d, face_id) in enumerate(row[:k]):
            dists[i, j], ids[i, j] = d, face_id
    return dists, ids
