"""Users and credentials: ``user ...``, ``login`` and ``logout``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, open_app, open_core, settings, state
from facewarden.cli.lazy import Lazy
from facewarden.core.errors import FacewardenError, InvalidInput, Refused

if TYPE_CHECKING:
    from facewarden.cli.credentials import cli_actor, token_file, write_token_file
else:  # imported on first use: ``facewarden --help`` loads no database, model or video code
    cli_actor = Lazy("facewarden.cli.credentials", "cli_actor")
    token_file = Lazy("facewarden.cli.credentials", "token_file")
    write_token_file = Lazy("facewarden.cli.credentials", "write_token_file")

user_app = typer.Typer(no_args_is_help=True, help="Manage users and their API tokens.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens.")
user_app.add_typer(token_app, name="token")


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[list[str], typer.Option("--role", help="Role (repeatable).")],
) -> None:
    """Create a user; its API token is printed once and stored only as a hash."""
    with open_app() as (fw, actor):
        token = fw.users.add(actor, name, role)
    output.out.print(f"user [bold]{name}[/] ({', '.join(role)}); API token, shown once:")
    print(token)


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users: roles, state, token expiry and last use."""
    with open_app() as (fw, actor):
        rows = fw.users.list(actor)
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        state_ = "active" if r["active"] else "disabled"
        if r["token_expired"]:
            state_ += ", token expired"
        output.out.print(
            f"{r['name']}: {', '.join(r['roles'])} ({state_}); "
            f"last used {r['last_used_at'] or 'never'}; token expires {r['token_expires_at']}"
        )


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user: their token and console sessions stop working at once."""
    with open_app() as (fw, actor):
        res = fw.users.set_active(actor, name, False)
    output.out.print(f"user {name} disabled ({res['sessions_ended']} console session(s) ended)")


@user_app.command("enable")
def user_enable(name: str) -> None:
    """Enable a disabled user again (with the token they had)."""
    with open_app() as (fw, actor):
        fw.users.set_active(actor, name, True)
    output.out.print(f"user {name} enabled")


@token_app.command("rotate")
def user_token_rotate(
    name: Annotated[str | None, typer.Argument(help="User (default: yourself).")] = None,
) -> None:
    """Issue a new API token (shown once); the old one and the user's console sessions stop
    working at once. Your own expired token may be rotated (not a disabled user's)."""
    from facewarden.cli.credentials import TOKEN_ENV, read_token_file

    if state.server:
        from urllib.parse import quote

        from facewarden.cli.remote import open_remote, server_token_file

        remote, actor = open_remote(state.server, state.acting_as)
        target = name or actor.name
        try:
            token = remote.client.call("POST", f"/users/{quote(target, safe='')}/token")["token"]
        finally:
            remote.close()
        output.out.print(f"user [bold]{target}[/]: new API token, shown once:")
        print(token)
        stored = server_token_file(state.server)
        if target == actor.name and not os.environ.get(TOKEN_ENV) and stored.exists():
            write_token_file(stored, token)
        return
    with open_core() as fw:
        try:
            actor, where = cli_actor(fw, state.acting_as)
        except FacewardenError as exc:
            if exc.code != "token_expired" or name not in (None, state.acting_as):
                raise
            # An expired token may still rotate itself, here, with the data directory.
            expired = os.environ.get(TOKEN_ENV) or read_token_file(token_file(fw.settings))
            actor = fw.actor(token=expired, allow_expired=True)
            if name not in (None, actor.name) or state.acting_as not in (None, actor.name):
                # Only the owner's own token, never anyone else's, even by --as NAME.
                raise Refused(
                    f"an expired token may only rotate itself (it is {actor.name!r}'s)",
                    code="not_your_token",
                ) from exc
            where = TOKEN_ENV if os.environ.get(TOKEN_ENV) else str(token_file(fw.settings))
        target = name or actor.name
        token = fw.users.rotate(actor, target)
    output.out.print(f"user [bold]{target}[/]: new API token, shown once (the old one is dead):")
    print(token)
    if target == actor.name and where != TOKEN_ENV:
        write_token_file(Path(where), token)
        output.err.print(f"stored in {where}")


def login() -> None:
    """Store your API token (typed, or read from standard input) for this data directory in
    a file only your OS account can read."""
    if sys.stdin.isatty():
        token = typer.prompt("API token", hide_input=True)
    else:
        token = sys.stdin.readline()
    if not token.strip():
        raise InvalidInput("no token given")
    if state.server:
        from facewarden.cli.remote import check_token, server_token_file

        actor = check_token(state.server, token.strip())
        if state.acting_as and state.acting_as != actor.name:
            raise InvalidInput(f"that token belongs to {actor.name}, not {state.acting_as}")
        path = server_token_file(state.server)
        write_token_file(path, token.strip())
        output.out.print(f"logged in to {state.server} as [bold]{actor.name}[/]; token in {path}")
        return
    with open_core() as fw:
        actor = fw.actor(token=token.strip())
    if state.acting_as and state.acting_as != actor.name:
        raise InvalidInput(f"that token belongs to {actor.name}, not {state.acting_as}")
    path = token_file(settings())
    write_token_file(path, token.strip())
    output.out.print(f"logged in as [bold]{actor.name}[/]; token stored in {path} (mode 0600)")


def logout() -> None:
    """Remove this OS account's stored token for this data directory (or server)."""
    from facewarden.cli.remote import server_token_file

    path = server_token_file(state.server) if state.server else token_file(settings())
    path.unlink(missing_ok=True)
    output.out.print(f"removed {path}")
