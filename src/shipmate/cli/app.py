"""The application object every command receives: global options, output and `abort`.

Data goes to stdout, messages to stderr. Commands call `app.load_spec()` rather than the loader,
so `-f` and `SHIPMATE_FILE` are honoured in one place.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from shipmate.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from rich.console import Console

    from shipmate.spec.loader import LoadedSpec


@dataclass
class Application:
    file: Path = Path("shipmate.yaml")
    output: str = "text"
    color: bool = True
    verbose: int = 0
    given_state_dir: Path | None = None

    @property
    def state_dir(self) -> Path:
        """`--state-dir`, else `.shipmate/` beside the spec file."""
        if self.given_state_dir is not None:
            return self.given_state_dir.absolute()
        return self.file.absolute().parent / ".shipmate"

    def _console(self, stream: Any) -> Console:
        from rich.console import Console

        return Console(file=stream, no_color=not self.color, highlight=False, soft_wrap=True,
                       force_terminal=None if self.color else False)

    @cached_property
    def out(self) -> Console:
        return self._console(sys.stdout)

    @cached_property
    def err(self) -> Console:
        return self._console(sys.stderr)

    @property
    def json(self) -> bool:
        return self.output == "json"

    def load_spec(self) -> LoadedSpec:
        from shipmate.spec.loader import load_file

        if not self.file.exists():
            raise UserError(f"{self.file}: no such file; create one with `shipmate init` or pass -f PATH")
        return load_file(self.file)

    def print_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def info(self, message: str) -> None:
        """A message for the person, on stderr (never data)."""
        sys.stderr.write(message + "\n")


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Application).output = value


def output_option(command: F) -> F:
    """`--output text|json` on a command too (the global option, given after the command)."""
    return click.option("--output", "-o", "output", type=click.Choice(["text", "json"]), default=None,
                        expose_value=False, callback=_set_output, is_eager=True,
                        help="Output format (same as the global --output).")(command)
