"""The vector index interface. An index is a derived cache of the database's templates."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    name: str

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors under int64 ids."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; returns how many were present."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest ``k`` per query: (Euclidean distances, ids), ids -1 where fewer exist."""
        ...

    def ids(self) -> np.ndarray:
        """Every id held, as int64."""
        ...

    def reset(self) -> None: ...

    def save(self) -> None:
        """Persist atomically (a crash leaves the previous or the new file, never half)."""
        ...
