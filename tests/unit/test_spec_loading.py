"""Loading a spec: `${VAR}` interpolation, environment overrides (mappings merge, lists replace,
null deletes), and the JSON Schema export and its CLI command.

Pure tests of `shipmate.spec.loader.load_text`, `shipmate.spec.document` and
`shipmate.spec.schema`, plus `shipmate schema` run in-process.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shipmate.cli.main import main
from shipmate.errors import SpecError
from shipmate.spec.document import merge, parse
from shipmate.spec.loader import load_file, load_text
from shipmate.spec.schema import SCHEMA_ID, json_schema
from tests.support import EXAMPLES, EXAMPLES_DIR


def spec_text(description: str = "plain", overrides: str = "") -> str:
    """A small valid spec; `description` lands in app.description, `overrides` (YAML indented for
    the key `overrides:` of the environment staging) in staging's overrides."""
    text = textwrap.dedent(f"""\
        version: 1
        app:
          name: demo
          description: "{description}"
        services:
          api:
            replicas: 2
            ports:
              - {{name: http, port: 8080}}
            config: {{A: "1", B: "2"}}
            autoscaling: {{minReplicas: 2, maxReplicas: 4, cpu: 70}}
            uses: [cache]
        addons:
          cache: {{kind: redis}}
        environments:
          dev:
            target: local
          staging:
            cluster: {{namespace: demo-staging}}
          prod:
            cluster: {{namespace: demo}}
            secretsDelivery: csi
        """)
    if overrides:
        text = text.replace("    cluster: {namespace: demo-staging}\n",
                            "    cluster: {namespace: demo-staging}\n    overrides:\n"
                            + textwrap.indent(textwrap.dedent(overrides), "      "))
    return text


# --- interpolation --------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "env", "loaded"), [
    ("${APP_TEXT}", {"APP_TEXT": "from the environment"}, "from the environment"),
    ("${APP_TEXT:-the default}", {}, "the default"),
    ("${APP_TEXT:-the default}", {"APP_TEXT": "set"}, "set"),
    ("${APP_TEXT:-}", {}, ""),
    ("before ${A} middle ${B} after", {"A": "1", "B": "2"}, "before 1 middle 2 after"),
    ("${A}${B}", {"A": "x", "B": "y"}, "xy"),
    ("$${LITERAL}", {"LITERAL": "not used"}, "${LITERAL}"),
    ("$${LITERAL:-kept}", {}, "${LITERAL:-kept}"),
    ("costs $5 or $$5", {}, "costs $5 or $$5"),
    ("${YAML_TEXT}", {"YAML_TEXT": "a: [b, {c"}, "a: [b, {c"),
], ids=["set", "default-when-unset", "set-beats-default", "empty-default", "several", "adjacent",
        "literal", "literal-with-default", "lone-dollars", "value-is-not-parsed-as-yaml"])
def test_interpolation(written: str, env: dict[str, str], loaded: str) -> None:
    spec = load_text(spec_text(description=written), env=env)
    assert spec.base.app.description == loaded


def test_interpolated_text_is_then_validated_as_the_field_type() -> None:
    text = spec_text().replace("replicas: 2", "replicas: ${REPLICAS}")
    assert load_text(text, env={"REPLICAS": "3"}).base.services["api"].replicas == 3
    with pytest.raises(SpecError, match=r"^shipmate.yaml:7:5: services.api.replicas: .*valid integer"):
        load_text(text, env={"REPLICAS": "three"})


def test_unset_variable_names_it_and_the_fix() -> None:
    with pytest.raises(SpecError) as caught:
        load_text(spec_text(description="${NOT_SET_ANYWHERE}"), env={})
    assert str(caught.value) == ("shipmate.yaml:4:16: app.description: environment variable NOT_SET_ANYWHERE "
                                 "is not set; export it, or write ${NOT_SET_ANYWHERE:-default}")


def test_keys_are_not_interpolated() -> None:
    text = spec_text().replace("  api:\n", "  ${SERVICE}:\n")
    with pytest.raises(SpecError, match=r"services\.\$\{SERVICE\}: name '\$\{SERVICE\}' must be lower case"):
        load_text(text, env={"SERVICE": "api"})


def test_load_file_reads_the_process_environment_unless_given_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "shipmate.yaml"
    path.write_text(spec_text(description="${APP_TEXT}"), encoding="utf-8")
    monkeypatch.setenv("APP_TEXT", "from os.environ")
    assert load_file(path).base.app.description == "from os.environ"
    assert load_file(path, env={"APP_TEXT": "given"}).base.app.description == "given"
    assert load_file(path).file == str(path)


def test_digest_is_of_the_text() -> None:
    one, same, other = (load_text(spec_text(d), env={}) for d in ("a", "a", "b"))
    assert one.digest == same.digest
    assert one.digest != other.digest
    assert len(one.digest) == 64


# --- environment overrides ------------------------------------------------------------------

def test_environment_without_overrides_is_the_base() -> None:
    spec = load_text(spec_text(overrides="services: {api: {replicas: 5}}\n"), env={})
    assert spec.for_env("dev") is spec.base
    assert spec.for_env("prod") is spec.base
    assert spec.for_env("staging").services["api"].replicas == 5
    assert spec.base.services["api"].replicas == 2


def test_mappings_merge_key_by_key() -> None:
    spec = load_text(spec_text(overrides="""\
        services:
          api:
            config: {B: "3", C: "4"}
            autoscaling: {maxReplicas: 8}
        """), env={})
    api = spec.for_env("staging").services["api"]
    assert api.config == {"A": "1", "B": "3", "C": "4"}
    assert api.autoscaling is not None
    assert (api.autoscaling.min_replicas, api.autoscaling.max_replicas, api.autoscaling.cpu) == (2, 8, 70)
    assert api.replicas == 2
    assert [p.port for p in api.ports] == [8080]


def test_lists_replace() -> None:
    spec = load_text(spec_text(overrides="""\
        services:
          api:
            ports: [{name: web, port: 9090}]
            uses: []
        """), env={})
    api = spec.for_env("staging").services["api"]
    assert [(p.name, p.port) for p in api.ports] == [("web", 9090)]
    assert api.uses == []
    assert [p.port for p in spec.base.services["api"].ports] == [8080]


def test_null_deletes() -> None:
    spec = load_text(spec_text(overrides="""\
        services:
          api:
            autoscaling: null
            config: {A: null}
            expose: null
        addons:
          nothing-here: null
        """), env={})
    api = spec.for_env("staging").services["api"]
    assert api.autoscaling is None
    assert api.config == {"B": "2"}
    assert spec.base.services["api"].autoscaling is not None
    assert set(spec.for_env("staging").addons) == {"cache"}


def test_overrides_add_keys_the_base_lacks() -> None:
    spec = load_text(spec_text(overrides="""\
        services:
          api:
            expose: {host: staging.example.com}
        alerts: {errorRate: 0.01}
        """), env={})
    staging = spec.for_env("staging")
    assert staging.services["api"].expose is not None
    assert staging.services["api"].expose.host == "staging.example.com"
    assert staging.alerts.error_rate == 0.01
    assert spec.base.services["api"].expose is None
    assert spec.base.alerts.error_rate == 0.05


def test_unknown_environment_lists_the_declared_ones() -> None:
    spec = load_text(spec_text(), env={})
    with pytest.raises(SpecError, match=r"no environment 'qa' in the spec; declared: dev, prod, staging"):
        spec.for_env("qa")


@pytest.mark.parametrize(("base", "over", "merged"), [
    ({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 9}}, {"a": 1, "b": {"c": 9, "d": 3}}),
    ({"a": [1, 2, 3]}, {"a": [4]}, {"a": [4]}),
    ({"a": {"b": 1}}, {"a": None}, {}),
    ({"a": 1}, {"missing": None}, {"a": 1}),
    ({"a": {"b": 1}}, {"a": "scalar"}, {"a": "scalar"}),
    ({"a": "scalar"}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ({"a": 1}, {"b": {"c": None}}, {"a": 1, "b": {"c": None}}),
    ({"a": [{"b": 1}]}, {"a": [{"c": 2}]}, {"a": [{"c": 2}]}),
], ids=["nested-mappings", "list-replaces", "null-deletes", "null-of-missing-key", "scalar-replaces-mapping",
        "mapping-replaces-scalar", "new-key-kept-as-written", "list-items-not-merged"])
def test_merge_rules(base: dict[str, Any], over: dict[str, Any], merged: dict[str, Any]) -> None:
    before_base, before_over = json.dumps(base), json.dumps(over)
    assert merge(base, over) == merged
    assert (json.dumps(base), json.dumps(over)) == (before_base, before_over)


# --- JSON Schema ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def file_data(text: str) -> Any:
    """The spec as a YAML editor sees it (after interpolation, keys as written)."""
    return parse(text, "shipmate.yaml", {}).data


@pytest.mark.parametrize("name", EXAMPLES)
def test_schema_accepts_every_example(name: str, validator: jsonschema.Draft202012Validator) -> None:
    data = file_data((EXAMPLES_DIR / name / "shipmate.yaml").read_text(encoding="utf-8"))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]
    assert errors == []


def test_examples_are_all_here() -> None:
    assert set(EXAMPLES) >= {"cyber-werewolves", "tianting", "platform-v6", "security-triage", "nova"}


def test_schema_uses_the_keys_of_the_file(validator: jsonschema.Draft202012Validator) -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID
    autoscaling = schema["$defs"]["Autoscaling"]["properties"]
    assert {"minReplicas", "maxReplicas"} <= set(autoscaling)
    assert "min_replicas" not in autoscaling
    assert "from" in schema["$defs"]["SecretSpec"]["properties"]
    assert set(schema["required"]) == {"app", "services", "environments"}


def test_schema_accepts_the_short_and_numeric_forms_the_loader_accepts(
        validator: jsonschema.Draft202012Validator) -> None:
    text = spec_text().replace(
        '    config: {A: "1", B: "2"}\n',
        "    secrets: [token, {secret: other, delivery: env, env: OTHER}]\n"
        "    resources: {requests: {cpu: 1, memory: 1073741824}, limits: {cpu: 2.5, memory: 2147483648}}\n"
        "    terminationGraceSeconds: 10\n",
    ) + "secrets:\n  token: {set: true}\n  other: {generate: {}}\nalerts: {latencyP99: 1.5, serviceDown: 60}\n"
    load_text(text, env={})
    assert list(validator.iter_errors(file_data(text))) == []


@pytest.mark.parametrize(("edit", "where"), [
    (("environments:", "servics: {}\nenvironments:"), []),
    (("    replicas: 2", "    replica: 2"), ["services", "api"]),
    (("  cache: {kind: redis}", "  cache: {kind: redis, databse: [x]}"), ["addons", "cache"]),
    (("    target: local", "    target: local\n    colour: blue"), ["environments", "dev"]),
], ids=["top-level", "service", "addon", "environment"])
def test_schema_rejects_unknown_keys(edit: tuple[str, str], where: list[str],
                                     validator: jsonschema.Draft202012Validator) -> None:
    text = spec_text().replace(*edit)
    with pytest.raises(SpecError, match="unknown key"):
        load_text(text, env={})
    errors = list(validator.iter_errors(file_data(text)))
    assert errors, "the schema accepted an unknown key"
    assert any(list(e.absolute_path) == where and "Additional properties" in e.message for e in errors), [
        (list(e.absolute_path), e.message) for e in errors]


def test_schema_rejects_wrong_types(validator: jsonschema.Draft202012Validator) -> None:
    for old, new in (("replicas: 2", "replicas: many"), ("{kind: redis}", "{kind: mongodb}"),
                     ("port: 8080", "port: 70000")):
        text = spec_text().replace(old, new)
        assert list(validator.iter_errors(file_data(text))), new


# --- `shipmate schema` ------------------------------------------------------------------------

@pytest.fixture
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger("shipmate")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


@pytest.mark.usefixtures("restore_logger")
def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == json_schema()
    assert out.endswith("}\n")


@pytest.mark.usefixtures("restore_logger")
def test_schema_command_writes_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "shipmate.schema.json"
    assert main(["schema", "--out", str(target)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"wrote {target}"
    assert json.loads(target.read_text(encoding="utf-8")) == json_schema()


def test_an_empty_variable_takes_the_default_like_a_shell() -> None:
    from shipmate.spec.loader import load_text as load

    text = "app:\n  name: x${E:-y}\nservices: {a: {ports: [{port: 80}]}}\nenvironments: {d: {}}\n"
    assert load(text, "s.yaml", {"E": ""}).base.app.name == "xy"
    assert load(text, "s.yaml", {"E": "z"}).base.app.name == "xz"
    assert load(text.replace(":-y", ""), "s.yaml", {"E": ""}).base.app.name == "x"


def test_alias_expansion_is_bounded() -> None:
    from itertools import pairwise

    from shipmate.errors import SpecError
    from shipmate.spec.loader import load_text as load

    names = "abcdefghij"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{n}: &{n} [{', '.join(['*' + p] * 10)}]" for p, n in pairwise(names)]
    with pytest.raises(SpecError, match="expands to more than"):
        load("\n".join(lines) + "\n", "s.yaml", {})
