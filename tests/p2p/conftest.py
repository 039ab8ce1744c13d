"""Fixtures for the peer-to-peer tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from p2p_helpers import Nets


@pytest.fixture
async def nets() -> AsyncIterator[Nets]:
    n = Nets()
    try:
        yield n
    finally:
        for net in n.started:
            await net.stop(grace=0.2)
