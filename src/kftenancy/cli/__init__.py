"""The `kftenancy` command line (typer + rich).

Each command group lives in a module named after what it does; this module only
assembles them. Every flag defaults from an environment variable (KFTENANCY_*).
"""

from __future__ import annotations

import typer

from kftenancy.cli import capacity as _capacity
from kftenancy.cli import controller as _controller
from kftenancy.cli import datalake as _datalake
from kftenancy.cli import doctor as _doctor
from kftenancy.cli import gateway as _gateway
from kftenancy.cli import install as _install
from kftenancy.cli import lab as _lab
from kftenancy.cli import render as _render
from kftenancy.cli import run as _run
from kftenancy.cli import webhook as _webhook

app = typer.Typer(
    name="kftenancy",
    help="Safe multi-tenant Kubeflow: render, plan and run the tenancy operator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_render.register(app)
_run.register(app)
_webhook.register(_run.run_app)
_gateway.register(_run.run_app)
_gateway.register_demo(app)
_lab.register(app)
_controller.register(app)
_capacity.register(app)
_datalake.register(app)
_doctor.register(app)
_install.register(app)


def main() -> None:
    app()
