"""JSON Schema of shipmate.yaml for editors (`shipmate schema`). Pure."""

from __future__ import annotations

from typing import Any

from shipmate.spec.models import AppSpec

SCHEMA_ID = "https://shipmate.dev/schema/shipmate.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a whole shipmate.yaml, keys as written in the file."""
    schema = AppSpec.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            **schema, "title": "shipmate.yaml"}
