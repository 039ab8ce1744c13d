"""Storage backend conformance kit (pytest plugin; filled in by the storage work)."""
