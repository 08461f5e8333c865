"""Who runs a CLI command: the owner of an API token, never a bare name.

The token comes from ``FACEWARDEN_TOKEN`` or, failing that, from the token file of this
OS account for this data directory: ``$XDG_CONFIG_HOME/facewarden/tokens/<sha256 of the
resolved data directory>`` (mode 0600 in a 0700 folder). ``facewarden init`` writes the
first user's token there, so a single operator types nothing; ``facewarden login`` stores
another token (another person on their own OS account); ``--as NAME`` only asserts whose
token it must be.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.errors import Refused, Unauthenticated
from facewarden.services.app import Facewarden

TOKEN_ENV = "FACEWARDEN_TOKEN"


def config_home() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "facewarden"


def token_file(settings: Settings) -> Path:
    """This OS account's token file for the data directory of ``settings``."""
    key = hashlib.sha256(str(settings.data_dir.expanduser().resolve()).encode()).hexdigest()
    return config_home() / "tokens" / key


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` readable by this OS account only (file 0600, folders 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in (path.parent, path.parent.parent):
        folder.chmod(0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_token_file(path: Path) -> str | None:
    """The stored token, or None when there is no file. A file that another account owns
    or that others may read is refused (a token anyone can read identifies no one)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise Refused(
            f"token file {path} is readable by others or not yours "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): 'chmod 600' it, or remove it and "
            "'facewarden login' again",
            code="insecure_token_file",
        )
    return path.read_text().strip() or None


def cli_actor(fw: Facewarden, acting_as: str | None) -> tuple[Actor, str]:
    """The authenticated actor and where its token came from. ``--as NAME`` with someone
    else's credential is refused (and the attempt logged)."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    where = TOKEN_ENV
    if not token:
        path = token_file(fw.settings)
        token = read_token_file(path) or ""
        where = str(path)
    if not token:
        who = f" as {acting_as}" if acting_as else ""
        raise Unauthenticated(
            f"no credential to act{who}: set {TOKEN_ENV} to your API token, or store it "
            "once with 'facewarden login' (no token file for this data directory)"
        )
    actor = fw.actor(token=token)
    if acting_as and acting_as != actor.name:
        problem = (
            f"--as {acting_as} refused: the credential ({where}) belongs to {actor.name}; "
            f"acting as {acting_as} needs {acting_as}'s own token in {TOKEN_ENV}"
        )
        fw.audit.record(
            actor, "act_as", outcome="refused", error=problem, details={"as": acting_as}
        )
        raise Refused(problem, code="not_your_token")
    return actor, where
