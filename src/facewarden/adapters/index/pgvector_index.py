"""pgvector inside PostgreSQL: an HNSW index beside the system of record.

When the vectors live in the same database as the ``faces`` table, each vector row references
its face with ``ON DELETE CASCADE``: erasing a face removes its vector in the same
transaction. Filtered searches count the admitted rows first (btree indexes on source and
jurisdiction): up to ``exact_subset`` of them are scanned exactly; broader filters use
pgvector's iterative HNSW scans, so they still return ``k`` rows instead of the few that
survive one HNSW pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from facewarden.adapters.index.base import (
    FaceLabel,
    IndexFilter,
    PurgeReport,
    empty_result,
    pad_result,
)

TABLE = "face_vectors"


def _literal(vec: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.9g}" for x in vec) + "]"


class PgvectorIndex:
    name = "pgvector"

    def __init__(
        self,
        url_or_engine: str | Engine,
        dimension: int = 128,
        *,
        ef_search: int = 100,
        exact_subset: int = 50_000,
        m: int = 16,
        ef_construction: int = 64,
        build_memory: str = "2GB",
    ) -> None:
        self.engine = (
            create_engine(url_or_engine, pool_pre_ping=True)
            if isinstance(url_or_engine, str)
            else url_or_engine
        )
        if self.engine.dialect.name != "postgresql":
            raise ValueError("the pgvector index needs a PostgreSQL database URL")
        self.dimension = dimension
        self.ef_search = ef_search
        self.exact_subset = exact_subset
        if not 2 <= m <= 100 or ef_construction < 2 * m:
            raise ValueError("HNSW needs 2 <= m <= 100 and ef_construction >= 2 * m")
        if not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)", build_memory):
            raise ValueError(f"build memory {build_memory!r} is not like '2GB' or '512MB'")
        self.m, self.ef_construction, self.build_memory = m, ef_construction, build_memory
        self._removed_since_purge = 0
        self._ensure()

    def _ensure(self) -> None:
        with self.engine.begin() as con:
            con.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            if inspect(con).has_table(TABLE):
                return
            references = (
                " REFERENCES faces(id) ON DELETE CASCADE" if inspect(con).has_table("faces") else ""
            )
            con.execute(
                text(
                    f"CREATE TABLE {TABLE} (face_id bigint PRIMARY KEY{references}, "
                    "source text NOT NULL, jurisdiction text NOT NULL, "
                    f"embedding vector({self.dimension}) NOT NULL)"
                )
            )
            self._create_hnsw(con)
            for column in ("source", "jurisdiction"):
                con.execute(text(f"CREATE INDEX {TABLE}_{column} ON {TABLE} ({column})"))

    def _create_hnsw(self, con) -> None:
        if con.scalar(text(f"SELECT to_regclass('{TABLE}_hnsw')")) is not None:
            return  # checked first: CREATE INDEX would lock out writers even when it exists
        # The graph is built in memory while it fits (about 1 KB per face at m 16); a build
        # that spills inserts the rest on disk, several times slower.
        con.execute(text(f"SET LOCAL maintenance_work_mem = '{self.build_memory}'"))
        con.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {TABLE}_hnsw ON {TABLE} "
                f"USING hnsw (embedding vector_l2_ops) "
                f"WITH (m = {int(self.m)}, ef_construction = {int(self.ef_construction)})"
            )
        )

    def __len__(self) -> int:
        with self.engine.connect() as con:
            return int(con.scalar(text(f"SELECT count(*) FROM {TABLE}")))

    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[FaceLabel]) -> None:
        if len(ids) == 0:
            return
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dimension)
        if len(labels) != len(ids) or len(vectors) != len(ids):
            raise ValueError("ids, vectors and labels differ in length")
        rows = [
            {"id": int(i), "s": lab.source, "j": lab.jurisdiction, "v": _literal(v)}
            for i, v, lab in zip(ids, vectors, labels, strict=True)
        ]
        with self.engine.begin() as con:
            con.execute(
                text(
                    f"INSERT INTO {TABLE} (face_id, source, jurisdiction, embedding) "
                    "VALUES (:id, :s, :j, CAST(:v AS vector)) ON CONFLICT (face_id) DO UPDATE "
                    "SET source = excluded.source, jurisdiction = excluded.jurisdiction, "
                    "embedding = excluded.embedding"
                ),
                rows,
            )

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        with self.engine.begin() as con:
            removed = con.execute(
                text(f"DELETE FROM {TABLE} WHERE face_id = ANY(:ids)"),
                {"ids": [int(i) for i in ids]},
            ).rowcount
        self._removed_since_purge += removed
        return removed

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
        constraints = where.constraints() if where is not None else []
        clauses = [f"{name} = ANY(:{name})" for name, _ in constraints]
        params: dict[str, object] = {"k": k} | dict(constraints)
        sql = text(
            f"SELECT face_id, embedding <-> CAST(:q AS vector) AS d FROM {TABLE} "
            + (f"WHERE {' AND '.join(clauses)} " if clauses else "")
            + "ORDER BY embedding <-> CAST(:q AS vector) LIMIT :k"
        )
        rows = []
        with self.engine.begin() as con:
            con.execute(text(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), k)}"))
            con.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
            if exact:
                # Every admitted row compared: no HNSW scan (a sequential or btree scan).
                con.execute(text("SET LOCAL enable_indexscan = off"))
            elif clauses:
                admitted = con.scalar(  # counting stops past the limit: cheap for broad filters
                    text(
                        f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE "
                        f"{' AND '.join(clauses)} LIMIT {self.exact_subset + 1}) AS admitted"
                    ),
                    params,
                )
                if admitted <= self.exact_subset:
                    # Narrow filter: rows from the btree indexes, distances computed exactly
                    # (no HNSW scan, whose candidates the filter would thin out).
                    con.execute(text("SET LOCAL enable_indexscan = off"))
            for q in queries:
                found = con.execute(sql, params | {"q": _literal(q)}).all()
                rows.append([(float(d), int(face_id)) for face_id, d in found])
        return pad_result(rows, k)

    def ids(self) -> np.ndarray:
        with self.engine.connect() as con:
            found = con.scalars(text(f"SELECT face_id FROM {TABLE} ORDER BY face_id")).all()
        return np.array(found, dtype=np.int64)

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.engine.connect() as con:
            rows = con.execute(
                text(f"SELECT face_id, embedding::text FROM {TABLE} WHERE face_id = ANY(:ids)"),
                {"ids": [int(i) for i in ids]},
            ).all()
        found = np.array([r[0] for r in rows], np.int64)
        vectors = np.array(
            [np.array(r[1].strip("[]").split(","), np.float32) for r in rows], np.float32
        ).reshape(-1, self.dimension)
        return found, vectors

    def reset(self) -> None:
        """Empty the table and drop the HNSW index: a refill (``index rebuild``, ``index
        migrate``) loads the rows first and ``save`` builds the graph once, in bulk, which is
        many times faster than inserting into it row by row. Until then searches are exact."""
        with self.engine.begin() as con:
            self._removed_since_purge += int(con.scalar(text(f"SELECT count(*) FROM {TABLE}")))
            con.execute(text(f"TRUNCATE {TABLE}"))
            con.execute(text(f"DROP INDEX IF EXISTS {TABLE}_hnsw"))

    def save(self) -> None:
        """PostgreSQL persists every committed write itself; after a ``reset`` this builds
        the HNSW index over everything loaded since."""
        with self.engine.begin() as con:
            self._create_hnsw(con)

    def purge(self) -> PurgeReport:
        """``VACUUM FULL`` rewrites the table and its indexes into new files without the dead
        rows and drops the old files (an exclusive lock for the duration)."""
        report = PurgeReport(self.name, self._removed_since_purge)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
            con.execute(text(f"VACUUM FULL {TABLE}"))
        report.actions.append(f"VACUUM FULL {TABLE} (table and HNSW index rewritten)")
        self._removed_since_purge = 0
        return report

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "index": "hnsw",
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "iterative_scan": "strict_order",
            "exact_subset": self.exact_subset,
            "faces": len(self),
        }

    def close(self) -> None:
        self.engine.dispose()
