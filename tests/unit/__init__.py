"""Tests of pure code: no server, no event loop, no subprocess (``make test-fast``)."""
