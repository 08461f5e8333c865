"""The configured vector index backend."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from facewarden.adapters.index.base import VectorIndex
from facewarden.adapters.index.protection import KeyedRotation, TransformedIndex
from facewarden.adapters.index.sealed import private_dir
from facewarden.adapters.keyderive import INDEX_FILE, derive_key
from facewarden.config import Settings
from facewarden.core.errors import ConfigurationError

BACKENDS = ("faiss", "pgvector", "qdrant")


def build_index(
    settings: Settings, engine: Engine, backend: str | None = None, *, master_key: bytes
) -> VectorIndex:
    """``backend`` (default: ``settings.index``); pgvector lives in the system of record.

    Every backend sits behind the deployment's keyed rotation (``protection``), both derived
    from ``master_key`` (the template key); FAISS's files are sealed with another subkey."""
    rotation = KeyedRotation.for_deployment(master_key)
    return TransformedIndex(_backend(settings, engine, backend, master_key), rotation)


def _backend(
    settings: Settings, engine: Engine, backend: str | None, master_key: bytes
) -> VectorIndex:
    backend = backend or settings.index
    if backend in ("faiss", "qdrant") and not (backend == "qdrant" and settings.qdrant_url):
        private_dir(settings.index_dir)  # 0700: the files inside are the backends' own
    if backend == "faiss":
        from facewarden.adapters.index.faiss_index import FaissIndex

        return FaissIndex(
            settings.index_dir / "faiss",
            key=derive_key(master_key, INDEX_FILE),
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
