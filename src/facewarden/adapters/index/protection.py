"""Template protection in the index: a secret, keyed, distance-preserving rotation.

Every vector given to an index backend (FAISS, pgvector, Qdrant), and every query, is first
multiplied by a random orthogonal 128 x 128 matrix drawn from a key derived from the
deployment's template key (``keyderive.INDEX_TRANSFORM``). An orthogonal map preserves
Euclidean distances, so every backend ranks exactly as on the raw templates (up to float32
rounding, about 1e-6 of a distance; the search service re-scores its candidates from the
decrypted templates anyway). What the index holds is not a dlib template: an index copied
from one deployment cannot be searched with raw dlib templates, nor linked to another
deployment's index (ISO/IEC 24745 unlinkability), and a leaked index is renewed by a new key
and a rebuild (renewability).

It does not protect against a thief who holds the key as well (or the template key it is
derived from): the rotation is then known and inverted with one matrix product. Nor does it
hide the geometry of the gallery (distances between the faces it holds are preserved, by
design), so a thief who already holds raw templates of some enrolled faces could estimate
the rotation from enough matched pairs (a Procrustes fit needs about 128 of them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from facewarden.adapters.index.base import FaceLabel, IndexFilter, PurgeReport, VectorIndex
from facewarden.adapters.keyderive import INDEX_TRANSFORM, derive_key, key_fingerprint


def _keystream_gaussian(key: bytes, count: int) -> np.ndarray:
    """``count`` standard normal float64 values from AES-256-CTR's keystream under ``key``
    (a CSPRNG: without the key the values are unpredictable), by the Box-Muller transform."""
    pairs = (count + 1) // 2
    encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    words = np.frombuffer(encryptor.update(b"\0" * (16 * pairs)), dtype="<u8").reshape(-1, 2)
    # 53 random bits each, shifted off zero: uniform in (0, 1].
    u = ((words >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    radius = np.sqrt(-2.0 * np.log(u[:, 0]))
    angle = 2.0 * np.pi * u[:, 1]
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).ravel()[:count]


class KeyedRotation:
    """A secret orthogonal matrix: Haar-distributed (QR of a Gaussian matrix, signs fixed by
    R's diagonal), drawn from ``key`` (the ``index-transform-v1`` subkey)."""

    def __init__(self, key: bytes, dimension: int = 128) -> None:
        gaussian = _keystream_gaussian(key, dimension * dimension).reshape(dimension, dimension)
        q, r = np.linalg.qr(gaussian)
        q *= np.sign(np.diag(r))
        self.dimension = dimension
        self.matrix = np.ascontiguousarray(q.astype(np.float32))
        self._inverse = np.ascontiguousarray(q.T.astype(np.float32))
        self.fingerprint = key_fingerprint(key)

    @classmethod
    def for_deployment(cls, master_key: bytes, dimension: int = 128) -> KeyedRotation:
        return cls(derive_key(master_key, INDEX_TRANSFORM), dimension)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Rows rotated: ``x -> Q x`` for each row ``x``."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dimension)
        return np.ascontiguousarray(vectors @ self._inverse)

    def invert(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dimension)
        return np.ascontiguousarray(vectors @ self.matrix)


class TransformedIndex:
    """Any ``VectorIndex`` behind a ``KeyedRotation``: what reaches the backend, stored or
    queried, is rotated; ids, filters and distances pass through unchanged."""

    def __init__(self, inner: VectorIndex, rotation: KeyedRotation) -> None:
        self.inner = inner
        self.rotation = rotation
        self.name = inner.name

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str):
        # Backend specifics (``mode``, ``load_problem``, ``reserve``...) pass through.
        if name == "inner":  # not yet set (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[FaceLabel]) -> None:
        self.inner.add(ids, self.rotation.apply(vectors), labels)

    def remove(self, ids: np.ndarray) -> int:
        return self.inner.remove(ids)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        where: IndexFilter | None = None,
        *,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.search(self.rotation.apply(queries), k, where, exact=exact)

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found, vectors = self.inner.vectors(ids)
        return found, self.rotation.invert(vectors)

    def ids(self) -> np.ndarray:
        return self.inner.ids()

    def reset(self) -> None:
        self.inner.reset()

    def save(self) -> None:
        self.inner.save()

    def purge(self) -> PurgeReport:
        return self.inner.purge()

    def describe(self) -> dict[str, object]:
        return self.inner.describe() | {
            "transform": f"keyed orthogonal rotation ({self.rotation.fingerprint})"
        }

    def close(self) -> None:
        self.inner.close()
