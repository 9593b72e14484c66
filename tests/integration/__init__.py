"""Tests against real servers in this process: embedded Postgres and Redis, the provider
emulators on loopback, the gateway and a replica's runtime."""
