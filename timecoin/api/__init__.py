"""The client gRPC listener: ``timecoin.chain.v1`` and ``timecoin.wallet.v1`` services.

- ``backend``: the ``NodeBackend`` protocol the services need from the node.
- ``server``: ``ApiServer`` (health, reflection, limits, TLS rule).
- ``auth``: the cookie credential and per-connection submission limits.
- ``errors``: reasons to gRPC status codes (the one place), and back.
- ``client``: ``ApiClient`` for the CLI, tests and benchmarks.

See docs/api.md.
"""
