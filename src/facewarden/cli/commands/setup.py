"""Setting up: ``init``, ``demo`` and ``models``."""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from facewarden.cli import output
from facewarden.cli.context import JsonOpt, settings, state
from facewarden.cli.lazy import Lazy

if TYPE_CHECKING:
    from facewarden.cli.credentials import token_file, write_token_file
    from facewarden.services.app import Facewarden
else:  # imported on first use: ``facewarden --help`` loads no database, model or video code
    token_file = Lazy("facewarden.cli.credentials", "token_file")
    write_token_file = Lazy("facewarden.cli.credentials", "write_token_file")
    Facewarden = Lazy("facewarden.services.app", "Facewarden")

models_app = typer.Typer(
    no_args_is_help=True, help="Convert dlib's networks to ONNX and show which runtime runs."
)


def init(admin: Annotated[str, typer.Option(help="Name of the first user.")] = "admin") -> None:
    """Create the data directory, database, template key and the first user."""
    s = settings()
    fw, token = Facewarden.init(s, admin_name=admin)
    with closing(fw):
        output.out.print(f"facewarden data directory: {s.data_dir}")
        output.out.print(f"database: {fw.engine.url.render_as_string()}")
        output.out.print(
            "template key: "
            + (
                "from FACEWARDEN_TEMPLATE_KEY"
                if s.template_key
                else f"{s.resolved_key_file} (mode 0600)"
            )
            + f", id {fw.cipher.key_id}"
        )
        output.out.print(
            "audit key: "
            + (
                "from FACEWARDEN_AUDIT_KEY"
                if s.audit_key
                else f"{s.resolved_audit_key_file} (mode 0600)"
            )
            + f"; anchors: {s.resolved_anchor_file}"
        )
        output.out.print(
            "[bold]back up the key files now, separately from the data[/] "
            "(data encrypted under a lost key cannot be recovered)"
        )
        if token:
            path = token_file(s)
            write_token_file(path, token)
            output.out.print(
                f"first user [bold]{admin}[/] (admin, operator, investigator, dpo); "
                f"API token, shown once: [bold]{token}[/]"
            )
            output.out.print(f"stored for this OS account in {path} (mode 0600)")
        else:
            output.out.print("already initialised; schema is up to date")


def demo() -> None:
    """Build a small demo gallery from bundled press photos and run a search."""
    from facewarden.cli.demo import run_demo

    run_demo(settings() if state.data_dir else None)


@models_app.command("convert")
def models_convert(as_json: JsonOpt = False) -> None:
    """Convert the descriptor and MMOD detector to ONNX and cache HOG's detector now (else
    done at first use)."""
    from facewarden.services.models import convert_models

    rows = convert_models(settings())
    if as_json:
        output.emit_json(rows)
        return
    for row in rows:
        output.out.print(
            f"{row['model']}: {escape(str(row['file']))} ({int(row['bytes']) / 1e6:.1f} MB)"
        )


@models_app.command("info")
def models_info(as_json: JsonOpt = False) -> None:
    """Which runtime, detector and execution providers the pipeline uses."""
    from facewarden.services.models import describe_models

    data = describe_models(settings())
    output.emit_json(data) if as_json else output.show_mapping("models", data)
