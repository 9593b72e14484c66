"""Provider JSON made storable (``providers.text``): NUL dropped, lone surrogates replaced,
bodies orjson refuses read all the same, nothing walked when nothing needs it."""

from __future__ import annotations

import pytest

from providers.text import clean_json, clean_text, parse_provider_json


def test_nul_is_dropped_and_lone_surrogates_replaced_everywhere() -> None:
    body = rb'{"summary": "a\u0000b", "attendees": [{"email\u0000": "\ud800x"}], "n": 1}'
    assert parse_provider_json(body) == {
        "summary": "ab",
        "attendees": [{"email": "\ufffdx"}],
        "n": 1,
    }


def test_pairs_and_plain_text_are_kept() -> None:
    assert parse_provider_json(rb'{"t": "\ud83d\ude00 ok"}') == {"t": "\U0001f600 ok"}
    assert clean_text("plain") == "plain"
    assert clean_json([1, None, True, {"k": ["v"]}]) == [1, None, True, {"k": ["v"]}]


def test_invalid_utf8_and_raw_control_characters_are_read() -> None:
    assert parse_provider_json(b'{"t": "caf\xe9"}') == {"t": "caf\ufffd"}
    assert parse_provider_json(b'{"t": "tab\there", "z": "\x00"}') == {"t": "tab\there", "z": ""}


@pytest.mark.parametrize("body", [b"{", b"<html>", b'{"a": }'])
def test_what_is_not_json_stays_an_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_provider_json(body)
