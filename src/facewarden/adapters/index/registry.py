"""The configured vector index backend."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from facewarden.adapters.index.base import VectorIndex
from facewarden.config import Settings
from facewarden.core.errors import ConfigurationError

BACKENDS = ("faiss", "pgvector", "qdrant")


def build_index(settings: Settings, engine: Engine, backend: str | None = None) -> VectorIndex:
    """``backend`` (default: ``settings.index``); pgvector lives in the system of record."""
    backend = backend or settings.index
    if backend == "faiss":
        from facewarden.adapters.index.faiss_index import FaissIndex

        return FaissIndex(
            settings.index_dir / "faiss",
            ivf_threshold=settings.index_ivf_threshold,
            nprobe=settings.index_nprobe,
            rerank=settings.index_rerank,
        )
    if backend == "pgvector":
        from facewarden.adapters.index.pgvector_index import PgvectorIndex

        if engine.dialect.name != "postgresql":
            raise ConfigurationError(
                "FACEWARDEN_INDEX=pgvector needs FACEWARDEN_DATABASE_URL to be PostgreSQL "
                "with the pgvector extension"
            )
        return PgvectorIndex(
            engine,
            ef_search=settings.pgvector_ef_search,
            exact_subset=settings.pgvector_exact_subset,
            m=settings.pgvector_m,
            ef_construction=settings.pgvector_ef_construction,
            build_memory=settings.pgvector_build_memory,
        )
    if backend == "qdrant":
        from facewarden.adapters.index.qdrant_index import QdrantIndex

        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantIndex(
            settings.qdrant_url or str(settings.index_dir / "qdrant"),
            shard_by_jurisdiction=settings.qdrant_shard_by_jurisdiction,
            api_key=key,
        )
    raise ConfigurationError(f"unknown index backend {backend!r}; choose: {', '.join(BACKENDS)}")
