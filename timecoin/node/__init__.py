"""The asyncio node shell: chain state, mempool, consensus driver, services."""
