"""The application object every command receives: global options, output and `abort`.

Data goes to stdout, messages to stderr. Commands call `app.load_spec()` rather than the loader,
so `-f` and `SHIPMATE_FILE` are honoured in one place.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from shipmate.errors import ShipmateError, UserError
from shipmate.spec.loader import DEFAULT_FILE, LoadedSpec, load_file


@dataclass
class Application:
    file: Path = Path(DEFAULT_FILE)
    output: str = "text"
    color: bool = True
    verbose: int = 0
    out: Console = field(init=False)
    err: Console = field(init=False)

    def __post_init__(self) -> None:
        no_color = not self.color
        self.out = Console(file=sys.stdout, no_color=no_color, highlight=False, soft_wrap=True,
                           force_terminal=None if self.color else False)
        self.err = Console(file=sys.stderr, no_color=no_color, highlight=False, soft_wrap=True,
                           force_terminal=None if self.color else False)

    @property
    def json(self) -> bool:
        return self.output == "json"

    def load_spec(self) -> LoadedSpec:
        if not self.file.exists():
            raise UserError(f"{self.file}: no such file; create one with `shipmate init` or pass -f PATH")
        return load_file(self.file)

    def print_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def info(self, message: str) -> None:
        """A message for the person, on stderr (never data)."""
        self.err.print(message, markup=False)

    def abort(self, error: ShipmateError) -> NoReturn:
        raise error
