"""The optional OAuth connect flow: ``GET /oauth/{provider}/start`` and ``/callback`` sign a
user in at Google or Microsoft (authorization-code grant with PKCE) and create the account.

Mount it with ``add_connect_routes`` (into an existing aiohttp app) or ``create_connect_app``;
both add nothing unless ``oauth_connect_enabled`` is set (docs/oauth-connect.md).
"""

from connect.routes import add_connect_routes, create_connect_app

__all__ = ["add_connect_routes", "create_connect_app"]
