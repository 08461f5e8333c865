"""The ``facewarden`` commands, one module per group; ``cli/app.py`` registers them.

Each module defines its commands (and its ``typer.Typer`` sub-groups) and a
``register(app)`` that adds them to the root application."""
