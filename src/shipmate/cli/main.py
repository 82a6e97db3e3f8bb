"""`shipmate`: the command group, global options and the one top-level error handler.

Every option can also be given as a `SHIPMATE_*` environment variable (shown in --help).
Exit codes: 0 ok, 1 a check failed, 2 bad input or usage; an unexpected error prints one line
and the path of a file that holds the traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import click

from shipmate import __version__
from shipmate.cli.app import Application
from shipmate.errors import ShipmateError, exit_code
from shipmate.observe.logging import configure as configure_logging

# command name -> module; a module is imported only when its command runs (start-up stays fast)
COMMANDS = {
    "init": "shipmate.cli.init",
    "validate": "shipmate.cli.validate",
    "schema": "shipmate.cli.schema",
    "plan": "shipmate.cli.plan",
    "render": "shipmate.cli.render",
    "scan": "shipmate.cli.scan",
    "up": "shipmate.cli.local:up",
    "down": "shipmate.cli.local:down",
    "status": "shipmate.cli.local:status",
    "logs": "shipmate.cli.local:logs",
    "exec": "shipmate.cli.local:exec_",
    "deploy": "shipmate.cli.release:deploy",
    "rollback": "shipmate.cli.release:rollback",
    "rollout": "shipmate.cli.release:rollout",
    "history": "shipmate.cli.release:history_",
    "diff": "shipmate.cli.release:diff",
    "drill": "shipmate.cli.drill",
    "secrets": "shipmate.cli.secrets:secrets",
    "backup": "shipmate.cli.backup:backup",
}


class LazyGroup(click.Group):
    """A group whose commands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, name = where.partition(":")
        command = getattr(importlib.import_module(module), name or "command")
        return command if isinstance(command, click.Command) else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "SHIPMATE",
                               "max_content_width": 100})
@click.option("-f", "--file", "file", type=click.Path(path_type=Path), default="shipmate.yaml",
              show_default=True, show_envvar=True, help="The spec file.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
              show_envvar=True, help="Output of read commands.")
@click.option("--no-color", is_flag=True, default=False, show_envvar=True, help="Plain output without colour.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, show_envvar=True,
              help="Where the local target and the store keep their state.  [default: .shipmate beside the spec]")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-vv for debug).")
@click.version_option(__version__, prog_name="shipmate")
@click.pass_context
def cli(ctx: click.Context, file: Path, output: str, no_color: bool, state_dir: Path | None, verbose: int) -> None:
    """shipmate: one shipmate.yaml, every environment, hardened Kubernetes output."""
    color = not no_color and "NO_COLOR" not in os.environ
    configure_logging(verbose)
    ctx.obj = Application(file=file, output=output, color=color, verbose=verbose, given_state_dir=state_dir)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising SystemExit."""
    try:
        result = cli.main(args=argv, prog_name="shipmate", standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        return 130
    except click.ClickException as exc:
        sys.stderr.write(f"error: {exc.format_message()}\n")
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            sys.stderr.write(f"try: {exc.ctx.command_path} --help\n")
        return 2
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except ShipmateError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exit_code(exc)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - the one top-level handler
        import tempfile
        import traceback

        fd, path = tempfile.mkstemp(prefix="shipmate-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(traceback.format_exc())
        sys.stderr.write(f"error: internal error ({type(exc).__name__}); traceback in {path}\n")
        return 3
    return result if isinstance(result, int) else 0


def entry() -> None:
    """The console script: run, flush, and leave without tearing the heap down object by object
    (a scan of a large folder spends a tenth of a second freeing memory the OS frees at once)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
