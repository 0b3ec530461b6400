"""``hoopy lint-config``: every problem of a config, without starting it (config/lint.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hoopy.cli.common import out


def register(app: typer.Typer) -> None:
    app.command("lint-config")(lint_config)


def lint_config(
    file: Annotated[Path, typer.Argument(help="The TOML config to check.")] = Path("hoopy.toml"),
    output: Annotated[
        str, typer.Option("--format", help="rich (for people) or json (for CI).")
    ] = "rich",
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 2 when there are warnings (and no errors).")
    ] = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Also connect to each target with hoopy's account: the credential works, TLS "
            "verifies, masked columns exist.",
        ),
    ] = False,
) -> None:
    """Check a config: every error and warning, each with file:line, key and how to fix it.

    Exit status: 0 clean, 1 errors, 2 warnings only (with --strict)."""
    from hoopy.config.lint import lint, online_findings

    if output not in ("rich", "json"):
        raise typer.BadParameter("--format is rich or json")
    report = lint(file)
    if online and not report.errors:
        report.findings.extend(online_findings(report))
    if output == "json":
        print(json.dumps(report.to_json(), indent=1))
    else:
        for f in report.findings:
            colour = "red" if f.severity == "error" else "yellow"
            out.print(f"[bold {colour}]{f.severity}:[/] {escape(str(f))}")
        errors, warnings = len(report.errors), len(report.warnings)
        if not report.findings:
            out.print(f"[green]{escape(str(file))}: no problems found[/]")
        else:
            out.print(
                f"{escape(str(file))}: {errors} error{'s' * (errors != 1)}, "
                f"{warnings} warning{'s' * (warnings != 1)}"
            )
    raise typer.Exit(report.exit_code(strict=strict))
