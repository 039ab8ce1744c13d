"""Named failpoints at each persistence boundary, for crash-recovery tests.

As Bitcoin Core's dbcrash test does, a test can make the node die exactly at
a chosen point and then check that a restart recovers. Failpoints are off
unless the environment variable ``TIMED_FAILPOINTS`` names them; it is read
once at start-up and is meant for tests only::

    TIMED_FAILPOINTS="block_write.before=crash@5"   # crash the 5th time it is hit

Actions: ``crash`` (``os._exit(86)``, no cleanup, like kill -9) and
``raise`` (raise ``FailpointError``). ``@N`` hits on the N-th pass (default 1).

Names in use:
    block_write.before   before the block's atomic batch is written
    block_write.after    after the batch is durable, before anything else learns of it
    mempool_flush.mid    while the mempool is being re-checked after a block
    privval_write.before before the double-sign guard state is persisted
    privval_write.after  after it is persisted, before the signature is used
"""

from __future__ import annotations

import os
import threading

ENV_VAR = "TIMED_FAILPOINTS"
CRASH_EXIT_CODE = 86


class FailpointError(RuntimeError):
    """Raised by a failpoint configured with the ``raise`` action."""


_lock = threading.Lock()
_armed: dict[str, tuple[str, int]] = {}
_hits: dict[str, int] = {}


def configure(spec: str | None = None) -> None:
    """Arm failpoints from *spec* (default: the environment variable)."""
    spec = os.environ.get(ENV_VAR, "") if spec is None else spec
    with _lock:
        _armed.clear()
        _hits.clear()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            name, _, rest = item.partition("=")
            action, _, nth = (rest or "crash").partition("@")
            if action not in ("crash", "raise"):
                raise ValueError(f"failpoint {name}: unknown action {action!r}")
            _armed[name] = (action, int(nth or 1))


def hit(name: str) -> None:
    """Pass failpoint *name*: nothing happens unless a test armed it."""
    if not _armed:
        return
    with _lock:
        armed = _armed.get(name)
        if armed is None:
            return
        _hits[name] = count = _hits.get(name, 0) + 1
    action, nth = armed
    if count != nth:
        return
    if action == "crash":
        os._exit(CRASH_EXIT_CODE)
    raise FailpointError(name)


configure()
