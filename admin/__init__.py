"""The admin HTTP API (``/api/v1``): accounts, preferences, outbox and shards, for operators.

See docs/admin-api.md. One route table (``admin.routes``) builds both the router and the
OpenAPI document, so they cannot drift.
"""
