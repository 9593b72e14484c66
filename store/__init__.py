"""Persistence: embedded servers, migrations, encryption, and the account/credential repository."""
