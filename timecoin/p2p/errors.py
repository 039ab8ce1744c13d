"""Why a peer connection was refused or closed."""

from __future__ import annotations

from timecoin.core.errors import Reason, TimecoinError


class PeerRefused(TimecoinError):
    """The handshake failed or the peer must go; ``reason`` travels in a Disconnect."""

    reason = Reason.UNAUTHENTICATED


class Misbehaviour(TimecoinError):
    """A peer sent something invalid; carries the score it costs."""

    reason = Reason.MALFORMED

    def __init__(self, message: str, *, reason: Reason | None = None, score: int = 10) -> None:
        super().__init__(message, reason=reason)
        self.score = score
