"""Helpers the tests share (no tests here): the admin API server, the outbox scenario, the
Google discovery document check, the lock and layering tools."""
