"""Which providers the flow serves and where their endpoints are: clients from the settings,
Google's endpoints as configured, Microsoft's from the authority's OpenID discovery document.

Invariants: a provider is served only when its client id and secret are configured; the
Microsoft discovery document is fetched on first use and kept once it answered with both
endpoints (msal reads the same ``{authority}/v2.0/.well-known/openid-configuration``), so a
failed fetch is retried by the next flow.
"""

from __future__ import annotations

import aiohttp
import orjson

from config.settings import Settings
from connect.protocol import MICROSOFT_OIDC_SCOPES, Endpoints, ProviderClient
from kinds import KindRegistry, default_registry
from providers.http import MAX_TOKEN_ANSWER_BYTES, AnswerTooLarge, read_capped

GOOGLE_EXTRA_PARAMS = (
    # A refresh token is returned only for offline access, and on a repeated sign-in only
    # when consent is asked again.
    ("access_type", "offline"),
    ("prompt", "consent"),
)


class DiscoveryFailed(Exception):
    """The provider's discovery document could not be read; the message is safe to log."""


def provider_clients(
    settings: Settings, kinds: KindRegistry | None = None
) -> dict[str, ProviderClient]:
    """The configured providers' clients, by kind name; what each provider declares comes
    from the kinds registry."""
    kinds = default_registry() if kinds is None else kinds
    clients: dict[str, ProviderClient] = {}
    if settings.google_client_id and settings.google_client_secret is not None:
        clients["google"] = ProviderClient(
            "google",
            settings.google_client_id,
            settings.google_client_secret.get_secret_value(),
            tuple(settings.google_connect_scopes),
            GOOGLE_EXTRA_PARAMS,
            capabilities=kinds["google"].capabilities,
        )
    if settings.microsoft_client_id and settings.microsoft_client_secret is not None:
        resource = tuple(s for s in settings.microsoft_scopes if s not in MICROSOFT_OIDC_SCOPES)
        clients["microsoft"] = ProviderClient(
            "microsoft",
            settings.microsoft_client_id,
            settings.microsoft_client_secret.get_secret_value(),
            (*MICROSOFT_OIDC_SCOPES, *resource),
            (("response_mode", "query"),),
            capabilities=kinds["microsoft"].capabilities,
        )
    return clients


class EndpointBook:
    """Each provider's authorization and token endpoints, discovered once where needed."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._authority = settings.microsoft_authority.rstrip("/")
        self._known = {
            "google": Endpoints(settings.google_auth_uri, settings.google_token_uri),
        }

    async def endpoints(self, provider: str) -> Endpoints:
        known = self._known.get(provider)
        if known is None:
            known = self._known[provider] = await self._discover_microsoft()
        return known

    async def _discover_microsoft(self) -> Endpoints:
        url = f"{self._authority}/v2.0/.well-known/openid-configuration"
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise DiscoveryFailed(f"discovery answered {response.status}")
                document = orjson.loads(await read_capped(response, MAX_TOKEN_ANSWER_BYTES))
        except (aiohttp.ClientError, TimeoutError, ValueError, AnswerTooLarge) as exc:
            raise DiscoveryFailed(f"discovery failed: {type(exc).__name__}") from None
        authorize = document.get("authorization_endpoint") if isinstance(document, dict) else None
        token = document.get("token_endpoint") if isinstance(document, dict) else None
        issuer = document.get("issuer") if isinstance(document, dict) else None
        if not isinstance(authorize, str) or not isinstance(token, str):
            raise DiscoveryFailed("discovery document lacks the endpoints")
        if not isinstance(issuer, str):
            raise DiscoveryFailed("discovery document names no issuer")
        return Endpoints(authorize, token, issuer)
