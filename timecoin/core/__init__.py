"""Pure ledger logic: types, keys, addresses, validation, UTXO application.

Nothing in this package performs I/O or imports asyncio, grpc, plyvel, time,
random or the generated protobuf code (tests/unit/test_layering.py checks it).
"""
