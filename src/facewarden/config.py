"""Typed settings, read from the environment (``FACEWARDEN_*``) and command-line overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from facewarden.core.limits import (
    DETECT_MAX_PIXELS,
    MAX_ARCHIVE_BYTES,
    MAX_ARCHIVE_MEMBERS,
    MAX_IMAGE_FACES,
)


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
    """Where the template key file is (default ``<data_dir>/template.key``): may sit outside
    the data directory, on another volume; back it up separately from the data."""
    key_rotate_batch: int = Field(500, ge=1, le=100_000)
    """Records re-encrypted per transaction by ``facewarden key rotate``."""
    audit_key: SecretStr | None = None
    """Base64 (or 64 hex digits) key of the audit log's MAC; default: the audit key file."""
    audit_key_file: Path | None = None
    """Where the audit MAC key file is (default ``<data_dir>/audit.key``)."""
    audit_anchor_file: Path | None = None
    """Append-only file of audit anchors (default ``<data_dir>/audit-anchors.log``); best on
    another volume or host than the database."""
    audit_anchor_every: int = Field(100, ge=1)
    """An anchor is written after every this many audit records ..."""
    audit_anchor_seconds: float = Field(3600.0, gt=0)
    """... and when the newest record is this much younger than the last anchor (the server
    also checks this on its own every few minutes)."""

    threshold: float = Field(0.6, gt=0, le=2)
    threshold_policy: Literal["fixed", "fpir"] = "fixed"
    """How a search picks its distance threshold when none is given: ``fixed`` (``threshold``)
    or ``fpir`` (the largest distance whose calibrated expected number of false candidates,
    gallery size x FMR, is at most ``target_fpir``; never looser than ``threshold``). A case
    can choose its own (``case open --target-fpir``)."""
    target_fpir: float = Field(0.01, gt=0, lt=1)
    """Target false positive identification rate of the ``fpir`` policy."""
    top_k: int = Field(10, ge=1, le=1000)
    detector: Literal["hog", "cnn", "hybrid"] = "cnn"
    """Face detector: ``cnn`` (dlib's MMOD CNN on ONNX Runtime: also turned, dark and partly
    hidden faces), ``hog`` (dlib's frontal HOG, about ±30 degrees) or ``hybrid`` (HOG, then
    the CNN on images where HOG found nothing). docs/detection.md has the measurements behind
    the default (``cnn`` at upsampling 0 with the retry)."""
    upsample: int = Field(0, ge=0, le=4)
    """Times the image is doubled before detection: each finds faces half as small (HOG's
    smallest is about 80 pixels at 0, the CNN's about 40) at about four times the cost."""
    detector_retry: bool = True
    """Where the detector finds no face, look once more with the CNN at one more upsampling
    (small faces: a distant or low-resolution probe) - the cost only on images without a
    face."""
    ingest_detector: Literal["same", "hog", "cnn", "hybrid"] = "hybrid"
    """Face detector for photos at ingest (bulk portraits, where HOG finds nearly every face
    at a fraction of the CNN's cost): ``hybrid`` (HOG on the image enlarged by
    ``ingest_hog_scale``, then the CNN at ``upsample`` where HOG found nothing, and the
    retry), ``hog``, ``cnn``, or ``same`` (the ``detector`` setting). Probes, videos and
    redaction use ``detector``. docs/detection.md has the measurements behind the default."""
    ingest_hog_scale: float = Field(1.5, ge=1.0, le=4.0, allow_inf_nan=False)
    """Enlargement of the image before HOG at ingest: HOG's smallest face, about 80 pixels,
    becomes 80/scale (1.5: about 53) at scale squared the cost."""
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
    probe_max_side: int = Field(1600, ge=64, le=20_000)
    """Search, verification and subject probes are reduced to at most this many pixels on
    their longer side before detection (a JPEG is decoded directly at a smaller scale)."""
    max_probe_faces: int = Field(50, ge=1, le=10_000)
    """Faces searched per probe: the largest this many (the result says how many were left)."""
    detect_max_pixels: int = Field(DETECT_MAX_PIXELS, ge=64 * 64, le=1_000_000_000)
    """Pixels the face detector may work on for one image or video frame, counted after its
    upsampling (a retry's included); a larger image is detected on a reduced copy and its
    faces aligned from the full image (ingest, probes, video, redaction)."""
    max_image_faces: int = Field(MAX_IMAGE_FACES, ge=1, le=100_000)
    """Faces stored per ingested image or video frame: the largest this many (the ingest
    summary says how many were left)."""
    search_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0, le=256)
    """Server: worker processes that decode probes and run the models, in parallel (0: in the
    server process, one probe at a time)."""
    search_heavy_pixels: int = Field(4_000_000, ge=0)
    """Server: probes declaring more pixels than this are analysed by a separate lane of
    workers (half of them, at least one), so huge photos cannot hold up small searches
    (0: one lane for all)."""
    search_queue: int = Field(0, ge=0, le=10_000)
    """Server: probes waiting for a worker beyond those being processed (0: eight per
    worker); when full, the server answers 503 with Retry-After."""
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    max_archive_ratio: int = Field(200, ge=2)
    """Largest allowed uncompressed/compressed ratio of an archive member (zip bombs)."""
    max_archive_members: int = Field(MAX_ARCHIVE_MEMBERS, ge=1)
    """Entries one archive may hold; an archive with more is refused whole."""
    max_archive_bytes: int = Field(MAX_ARCHIVE_BYTES, ge=1024)
    """Total declared size of the image members read from one archive; members beyond it
    are skipped (``archive_too_large``)."""
    max_video_bytes: int = Field(4 * 1024**3, ge=1024)
    video_fps: float = Field(5.0, gt=0, le=60)
    """Frames per second of video sampled for detection (search, ingest, redaction)."""
    video_faces_per_track: int = Field(3, ge=1, le=50)
    """Ingest keeps at most this many distinct, best-quality faces of each video track."""
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    store_crops: bool = True

    case_search_quota: int = Field(100, ge=1)
    """Default number of searches a case allows (``case open --quota`` overrides it)."""
    probe_min_face_px: int = Field(36, ge=0)
    """Probe quality gate: a probe face whose box is narrower or shorter than this (pixels)
    is ``too_small``. Box sizes depend on the detector: 36 for the CNN's boxes is the bar of
    40 set on HOG's boxes, scaled by the CNN/HOG box size ratio (0.89, bench/quality_bar.py).
    Faces that fail the gate are not searched unless the investigator
    overrides it (``--allow-low-quality``, logged). 0 disables this check."""
    probe_min_blur: float = Field(30.0, ge=0)
    """Probe quality gate: focus (variance of the Laplacian of the aligned chip) below this
    is ``blurred``. 0 disables this check. (Re-derived on the CNN's boxes: unchanged.)"""
    probe_max_yaw: float = Field(0.34, gt=0)
    """Probe quality gate: a head turn (nose offset over eye distance) beyond this is
    ``profile``. A large value disables this check. (0.35 on HOG's boxes; 0.34 flags the
    same faces on the CNN's, bench/quality_bar.py.)"""
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
    max_jobs_per_user: int = Field(4, ge=1, le=1000)
    """Upload ingest jobs one user may have queued or running at once; a further upload is
    refused (``too_many_jobs``, 429 with Retry-After) before its files are saved: one user
    cannot fill the server's disk and queue."""
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
    def ingest_detector_setting(self) -> str:
        """The detection setting of photo ingest as recorded, e.g. ``hog-x1.5>cnn-up0+retry-up1``
        (HOG on the image enlarged 1.5 times, then the CNN where HOG found nothing)."""
        if self.ingest_detector == "same":
            return self.detector_setting
        retry = f"+retry-up{self.upsample + 1}" if self.detector_retry else ""
        hog = f"hog-x{self.ingest_hog_scale:g}"
        cnn = f"cnn-up{self.upsample}"
        chain = {"hog": hog, "cnn": cnn, "hybrid": f"{hog}>{cnn}"}[self.ingest_detector]
        return chain + retry

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'facewarden.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "template.key"

    @property
    def resolved_audit_key_file(self) -> Path:
        return self.audit_key_file or self.data_dir / "audit.key"

    @property
    def resolved_anchor_file(self) -> Path:
        return self.audit_anchor_file or self.data_dir / "audit-anchors.log"

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
