"""Fixtures shared by every test layer."""

from __future__ import annotations

import pytest

from tests.support import EXAMPLES


@pytest.fixture(params=EXAMPLES)
def example(request: pytest.FixtureRequest) -> str:
    """The name of each example application in turn."""
    return str(request.param)
