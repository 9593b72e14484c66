"""Calendar providers behind one neutral interface.

- ``interface``: what an account actor uses to talk to any calendar provider;
- ``models``: provider-neutral data (frozen dataclasses);
- ``errors``: the one error taxonomy every provider maps its failures to;
- ``capabilities``: what a provider declares about itself (push scope, request budget scope,
  identity claims, keep-alive), read wherever behaviour differs per provider;
- ``http``: the HTTP edge the clients share (one session per process, no retries);
- ``payload``, ``cursor_codec``: typed JSON readers and the cursor's wire form (pure);
- ``text``: provider JSON made storable (no NUL, no lone surrogate), however it arrives;
- ``identity``: an id_token's claims checked, and the account's stable subject (pure);
- ``google``, ``microsoft``: each provider's client, auth, mapping, cursor and notifications.

The emulators of both providers live in the sandbox (``sandbox.emulators``).
"""
