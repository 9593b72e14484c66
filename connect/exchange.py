"""The code exchange: one POST of the authorization_code grant to the token endpoint.

Invariants: one attempt, no retry (a code is single-use, a retry could only be refused);
failures are ``ExchangeFailed`` carrying the OAuth ``error`` code and HTTP status only, never
the endpoint's description or body, so no token or code reaches a message.
"""

from __future__ import annotations

import aiohttp
from pydantic import BaseModel, ConfigDict

from connect.protocol import AnswerError, TokenAnswer, parse_token_answer
from providers.http import MAX_TOKEN_ANSWER_BYTES, AnswerTooLarge, read_capped


class ExchangeFailed(Exception):
    """The token endpoint refused the code (``refused``) or could not be used; safe to log."""

    def __init__(self, error: str, status: int | None, *, refused: bool) -> None:
        super().__init__(f"code exchange failed: {error} (status {status})")
        self.error, self.status, self.refused = error, status, refused


class _ErrorAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    error: str


async def exchange_code(
    session: aiohttp.ClientSession, token_endpoint: str, form: dict[str, str]
) -> TokenAnswer:
    """The token endpoint's answer to ``form``; ExchangeFailed on any refusal or failure."""
    try:
        # Never redirected: a 307 would re-post the client secret to the host it names.
        async with session.post(
            token_endpoint,
            data=form,
            headers={"Accept": "application/json"},
            allow_redirects=False,
        ) as response:
            status, body = response.status, await read_capped(response, MAX_TOKEN_ANSWER_BYTES)
    except (aiohttp.ClientError, TimeoutError, AnswerTooLarge) as exc:
        raise ExchangeFailed(type(exc).__name__, None, refused=False) from None
    if status == 200:
        try:
            return parse_token_answer(body)
        except AnswerError:
            raise ExchangeFailed("malformed_answer", status, refused=False) from None
    # 4xx answers name an OAuth error (invalid_grant, invalid_client, ...); 5xx are outages.
    raise ExchangeFailed(_oauth_error(body), status, refused=400 <= status < 500)


def _oauth_error(body: bytes) -> str:
    try:
        parsed = _ErrorAnswer.model_validate_json(body)
    except ValueError:
        return "unreadable_error"
    return parsed.error[:64]
