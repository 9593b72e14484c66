"""Outbound writes (issue 7): what applications ask us to write, and the pure rules for doing it."""
