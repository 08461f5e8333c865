"""Typed settings, read from the environment (``FACEWARDEN_*``) and command-line overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/facewarden``, else ``~/.local/share/facewarden``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "facewarden"


class Settings(BaseSettings):
    """Everything an operator can configure. Each field maps to ``FACEWARDEN_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FACEWARDEN_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<data_dir>/facewarden.db``. PostgreSQL works too."""
    template_key: SecretStr | None = None
    """Base64 (or 64 hex digits) 256-bit key; default: the key file in the data directory."""
    key_file: Path | None = None

    threshold: float = Field(0.6, gt=0, le=2)
    top_k: int = Field(10, ge=1, le=1000)
    detector: Literal["hog", "cnn", "hybrid"] = "cnn"
    """Face detector: ``cnn`` (dlib's MMOD CNN on ONNX Runtime: also turned, dark and partly
    hidden faces), ``hog`` (dlib's frontal HOG) or ``hybrid`` (HOG, then the CNN on images
    where HOG found nothing). docs/detection.md has the measurements behind the default."""
    upsample: int = Field(0, ge=0, le=4)
    """Times the image is doubled before detection: each finds faces half as small (HOG's
    smallest is about 80 pixels at 0, the CNN's about 40) at about four times the cost."""
    detector_retry: bool = True
    """Where the detector finds no face, look once more at one more upsampling (small faces:
    a distant or low-resolution probe) - the cost only on images without a face."""
    descriptor_flip: bool = False
    """Average each face's descriptor with its mirror image's (a different template space:
    a gallery holds templates of one recipe only)."""
    runtime: Literal["auto", "onnx", "dlib"] = "auto"
    """Where the networks run: ``onnx`` (ONNX Runtime, converted once from dlib's model files,
    CUDA when present), ``dlib``, or ``auto`` (ONNX when it loads, else dlib)."""
    model_cache: Path | None = None
    """Where converted models are kept; default ``<data_dir>/models`` (may be shared)."""
    model_threads: int = Field(0, ge=0, le=256)
    """ONNX Runtime threads per process (0: the cores shared among the worker processes)."""
    index: Literal["faiss", "pgvector", "qdrant"] = "faiss"
    """Vector index backend: ``faiss`` (in process, the embedded default), ``pgvector`` (in the
    PostgreSQL system of record) or ``qdrant`` (a Qdrant server or cluster, or local mode)."""
    index_ivf_threshold: int = Field(100_000, ge=1000)
    """FAISS switches from exact search to IVF-PQ with exact re-rank at this many faces."""
    index_nprobe: int = Field(0, ge=0)
    """IVF lists visited per search (0: 3/16 of the lists, at least 16)."""
    index_rerank: int = Field(200, ge=1)
    """IVF-PQ candidates re-scored exactly from the raw vectors."""
    pgvector_ef_search: int = Field(100, ge=1)
    pgvector_exact_subset: int = Field(50_000, ge=0)
    """Filters admitting at most this many rows are scanned exactly, not through HNSW."""
    pgvector_m: int = Field(16, ge=2, le=100)
    """HNSW links per node (denser graphs: better recall, slower builds, more disk)."""
    pgvector_ef_construction: int = Field(64, ge=4, le=1000)
    pgvector_build_memory: str = Field("2GB", pattern=r"^\d+\s*(kB|MB|GB|TB)$")
    """``maintenance_work_mem`` for a bulk HNSW build (about 1 KB per face at m 16)."""
    qdrant_url: str | None = None
    """``http(s)://host:6333`` of a Qdrant server or cluster; default: local mode in
    ``<data_dir>/index/qdrant`` (one process at a time)."""
    qdrant_api_key: SecretStr | None = None
    qdrant_shard_by_jurisdiction: bool = False
    """Custom sharding with one shard key per jurisdiction (a Qdrant cluster)."""
    min_face_size: int = Field(20, ge=8)
    """Faces whose box is smaller than this (pixels, shorter side) are not enrolled."""
    max_image_pixels: int = Field(50_000_000, ge=10_000)
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    max_archive_ratio: int = Field(200, ge=2)
    """Largest allowed uncompressed/compressed ratio of an archive member (zip bombs)."""
    max_video_bytes: int = Field(4 * 1024**3, ge=1024)
    video_fps: float = Field(5.0, gt=0, le=60)
    """Frames per second of video sampled for detection (search, ingest, redaction)."""
    video_faces_per_track: int = Field(3, ge=1, le=50)
    """Ingest keeps at most this many distinct, best-quality faces of each video track."""
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    store_crops: bool = True

    case_search_quota: int = Field(100, ge=1)
    """Default number of searches a case allows (``case open --quota`` overrides it)."""
    subject_threshold: float = Field(0.5, gt=0, le=2)
    """Distance for subject access and erasure candidates, and for the suppression list.
    Stricter than the search threshold: a wrong match would disclose or delete someone else."""

    controller_name: str = ""
    controller_contact: str = ""
    dpo_contact: str = ""
    """Controller and data-protection contacts for the public notice."""
    production: bool = False
    """Production mode: refuse to start while the controller fields are empty."""

    # -- HTTP server (``facewarden serve``) ------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    search_rate_limit: str = "30/minute"
    """Searches, verifications and subject look-ups per user (``limits`` notation)."""
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    """Largest request body the server accepts (an ingest upload of files or a zip)."""
    session_hours: float = Field(8, gt=0, le=24 * 7)
    """Console sessions expire after this many hours."""
    token_days: float = Field(90, ge=0)
    """API tokens expire this many days after they were issued (0: never); an expired
    token is refused with ``token_expired`` until it is rotated."""
    auth_failure_limit: str = "10/minute"
    """Failed authentications allowed per client address and per user name (``limits``
    notation); beyond it the server answers 429 with Retry-After."""
    retention_interval_minutes: int = Field(60, ge=0)
    """How often the server runs the retention purge (0: never; use cron instead)."""
    index_catch_up_seconds: float = Field(1.0, ge=0)
    """How often a search looks for faces other processes committed (a CLI ingest while the
    server runs) to add them to this process's index."""
    secure_cookies: bool = False
    """Mark console cookies ``Secure`` (set it when a TLS proxy fronts the server)."""

    @property
    def detector_setting(self) -> str:
        """The detection setting as recorded with every search and ingest, e.g. ``cnn-up0``."""
        retry = f"+retry-up{self.upsample + 1}" if self.detector_retry else ""
        return f"{self.detector}-up{self.upsample}{retry}"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'facewarden.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "template.key"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def model_dir(self) -> Path:
        """Converted (ONNX) models, cached by the checksum of their source file."""
        return self.model_cache or self.data_dir / "models"

    @property
    def upload_dir(self) -> Path:
        """Where uploaded ingest files wait for their job (removed when it finishes)."""
        return self.data_dir / "uploads"

    @property
    def session_key_file(self) -> Path:
        return self.data_dir / "session.key"
