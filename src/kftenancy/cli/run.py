"""`kftenancy run <component>`: the long-running processes (controller, webhook, gateway).

Each component module adds its command to `run_app` through its own `register(run_app)`.
"""

from __future__ import annotations

import typer

run_app = typer.Typer(help="Run a kftenancy component in the foreground.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(run_app, name="run")
