"""shipmate's YAML emitter: whatever it writes reads back as exactly the data it was given."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shipmate.render.yamlio import dump, dump_all
from tests.support import EXAMPLES, example_kit

TRICKY = ["yes", "No", "ON", "y", "n", "~", "null", "1", "0x1F", "0o17", "1e3", "1_000", "1:30", ".inf", "-.5",
          "2024-01-05", "", " lead", "trail ", "a: b", "a #b", "#c", "- x", "-c", "--flag=1", "{x}", "[y]", "*x",
          "&x", "!x", "%x", "@x", "`x", "'q", '"q', "<<", "=", "?", "a\tb", "é", "a\x7fb", "x\n", "x\n\n", "\nx",
          "line one\nline two\n", "no newline\nat end", "trailing \nspace\n", "http://h:80/p", "a,b", "|", ">"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=30), st.sampled_from(TRICKY))
data = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(TRICKY)),
                                                 inner, max_size=4)), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(data)
def test_any_data_reads_back_unchanged(value: object) -> None:
    assert yaml.safe_load(dump(value)) == value


def test_tricky_strings_read_back_as_strings() -> None:
    doc = {"values": TRICKY, **{s: s for s in TRICKY}}
    assert yaml.safe_load(dump(doc)) == doc


def test_every_rendered_object_reads_back(example: str) -> None:
    kit = example_kit(example)
    for env in kit.environments:
        assert list(yaml.safe_load_all(dump_all(kit.objects[env]))) == kit.objects[env]


def test_multi_line_text_is_a_literal_block_and_keys_are_sorted() -> None:
    assert dump({"b": 1, "a": {"text": "x\ny\n"}}) == "a:\n  text: |\n    x\n    y\nb: 1\n"
    assert EXAMPLES
