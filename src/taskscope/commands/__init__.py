"""CLI commands beyond the basics in `taskscope.cli`, one module per analysis or export.

Each module defines `register(app: typer.Typer)`; add a new one to `MODULES`.
"""

from __future__ import annotations

import importlib

import typer

#: command modules under taskscope.commands, registered in this order
MODULES: list[str] = ["analyses_time", "analyses_path", "export", "usage", "ui", "fleet"]


def register_all(app: typer.Typer) -> None:
    """Add every command module's commands to `app`."""
    for name in MODULES:
        importlib.import_module(f"taskscope.commands.{name}").register(app)
