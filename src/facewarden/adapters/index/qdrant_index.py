"""Qdrant, for galleries beyond one machine, through ``qdrant-client``.

The same code talks to a Qdrant cluster (``FACEWARDEN_QDRANT_URL=http://host:6333``) and to
the client's local mode (a directory; what the tests use). With
``shard_by_jurisdiction`` the collection uses custom sharding with one shard key per
jurisdiction, so that one country's faces live on the nodes that hold that key (a
jurisdiction filter is a payload filter, indexed on a server).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from facewarden.adapters.index.base import (
    FaceLabel,
    IndexFilter,
    PurgeReport,
    empty_result,
    pad_result,
)

BATCH = 1000


class QdrantIndex:
    name = "qdrant"

    def __init__(
        self,
        location: str,
        dimension: int = 128,
        *,
        collection: str = "faces",
        shard_by_jurisdiction: bool = False,
        api_key: str | None = None,
    ) -> None:
        """``location``: an http(s) URL of a Qdrant server or cluster, or a local directory."""
        self.location = location
        self.remote = location.startswith(("http://", "https://"))
        self.client = (
            QdrantClient(url=location, api_key=api_key)
            if self.remote
            else QdrantClient(path=location)
        )
        self.dimension = dimension
        self.collection = collection
        self.sharded = shard_by_jurisdiction
        self._shard_keys: set[str] = set()
        self._removed_since_purge = 0
        self._ensure()

    def _ensure(self) -> None:
        if self.client.collection_exists(self.collection):
            return
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(
                size=self.dimension, distance=models.Distance.EUCLID
            ),
            sharding_method=models.ShardingMethod.CUSTOM if self.sharded else None,
        )
        if self.remote:
            for field in ("source", "jurisdiction"):
                self.client.create_payload_index(
                    self.collection, field, field_schema=models.PayloadSchemaType.KEYWORD
                )

    def _shard_key(self, jurisdiction: str) -> None:
        if self.sharded and jurisdiction not in self._shard_keys:
            try:
                self.client.create_shard_key(self.collection, jurisdiction)
            except Exception as exc:  # already there (another process created it)
                if "already exists" not in str(exc):
                    raise
            self._shard_keys.add(jurisdiction)

    def __len__(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[FaceLabel]) -> None:
        if len(ids) == 0:
            return
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dimension)
        if len(labels) != len(ids) or len(vectors) != len(ids):
            raise ValueError("ids, vectors and labels differ in length")
        groups: dict[str | None, list[models.PointStruct]] = {}
        for face_id, vec, label in zip(ids, vectors, labels, strict=True):
            point = models.PointStruct(
                id=int(face_id),
                vector=vec.tolist(),
                payload={"source": label.source, "jurisdiction": label.jurisdiction},
            )
            groups.setdefault(label.jurisdiction if self.sharded else None, []).append(point)
        for key, points in groups.items():
            if key is not None:
                self._shard_key(key)
            for start in range(0, len(points), BATCH):
                self.client.upsert(
                    self.collection, points[start : start + BATCH], shard_key_selector=key
                )

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        wanted: list[models.ExtendedPointId] = [int(i) for i in ids]
        present = len(self.client.retrieve(self.collection, wanted, with_payload=False))
        if present:
            self.client.delete(self.collection, models.PointIdsList(points=wanted), wait=True)
        self._removed_since_purge += present
        return present

    def search(
        self,
        queries: np.ndarray,
        k: int,
        where: IndexFilter | None = None,
        *,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, np.float32).reshape(-1, self.dimension)
        if where is not None and where.empty:
            return empty_result(len(queries), k)
        conditions: list[models.Condition] = [
            models.FieldCondition(key=name, match=models.MatchAny(any=values))
            for name, values in (where.constraints() if where is not None else [])
        ]
        query_filter = models.Filter(must=conditions) if conditions else None
        responses = self.client.query_batch_points(
            self.collection,
            [
                models.QueryRequest(
                    query=q.tolist(),
                    limit=k,
                    filter=query_filter,
                    # Local mode always compares every vector (and warns about params).
                    params=models.SearchParams(exact=True) if exact and self.remote else None,
                    with_payload=False,
                )
                for q in queries
            ],
        )
        rows = [[(float(p.score), int(p.id)) for p in r.points] for r in responses]
        return pad_result(rows, k)

    def ids(self) -> np.ndarray:
        found: list[int] = []
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, limit=10_000, offset=offset, with_payload=False
            )
            found += [int(p.id) for p in points]
            if offset is None:
                return np.array(sorted(found), dtype=np.int64)

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = self.client.retrieve(
            self.collection, [int(i) for i in ids], with_payload=False, with_vectors=True
        )
        found = np.array([int(p.id) for p in points], np.int64)
        vectors = np.array([p.vector for p in points], np.float32).reshape(-1, self.dimension)
        return found, vectors

    def reset(self) -> None:
        self._removed_since_purge += len(self)
        self.client.delete_collection(self.collection)
        self._shard_keys.clear()
        self._ensure()

    def save(self) -> None:
        """Qdrant persists every acknowledged write itself."""

    def purge(self) -> PurgeReport:
        report = PurgeReport(self.name, self._removed_since_purge)
        if self.remote:
            # The vacuum optimiser rewrites segments holding deleted points; with a zero
            # threshold it runs for any deletion. It works in the background on each node.
            self.client.update_collection(
                self.collection,
                optimizers_config=models.OptimizersConfigDiff(
                    deleted_threshold=0.0, vacuum_min_vector_number=0
                ),
            )
            report.actions.append("vacuum optimiser forced on (runs asynchronously per node)")
        else:
            storage = Path(self.location) / "collection" / self.collection / "storage.sqlite"
            if storage.is_file():
                con = sqlite3.connect(storage)
                try:
                    con.execute("VACUUM")
                finally:
                    con.close()
                report.actions.append("local storage VACUUMed")
        self._removed_since_purge = 0
        return report

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "location": self.location if not self.remote else "remote",
            "collection": self.collection,
            "sharded_by_jurisdiction": self.sharded,
            "faces": len(self),
        }

    def close(self) -> None:
        self.client.close()
