"""The conformance kit itself: usable from a plugin author's conftest, and it catches broken stores.

Each broken backend below breaks one rule of the KV interface; the kit must
fail the test for that rule (a kit that passes everything would be useless).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

BROKEN_BACKENDS = '''
import bisect
from timecoin.core.errors import StorageError
from timecoin.storage.kv import key_bounds
from timecoin_storage_memory import MemoryStore


class NaivePrefix(MemoryStore):
    """Upper bound prefix + b"\\\\xff": misses b"a\\\\xff\\\\xff" under prefix b"a"."""

    def iterate(self, prefix=b"", start=None, stop=None, reverse=False):
        if prefix and stop is None:
            stop = prefix + b"\\xff"
        return super().iterate(prefix, start, stop, reverse)


class Streaming(MemoryStore):
    """Applies each operation as it reads it: a failure midway leaves a torn batch."""

    def write(self, batch, *, sync=False):
        for key, value in batch:
            one = type(batch)()
            if value is None:
                one.delete(key)
            else:
                one.put(key, value)
            super().write(one, sync=sync)


class LiveIterator(MemoryStore):
    """Iterates the live data: sees writes made after iterate() was called."""

    def iterate(self, prefix=b"", start=None, stop=None, reverse=False):
        def gen():
            bounds = key_bounds(prefix, start, stop)
            if bounds is None:
                return
            i = bisect.bisect_left(self._keys, bounds[0])
            while i < len(self._keys):
                key = self._keys[i]
                if bounds[1] is not None and key >= bounds[1]:
                    return
                yield key, self._data[key]
                i += 1
        return gen()


class Immortal(MemoryStore):
    """Keeps answering after close()."""

    def close(self):
        pass
'''

CONFTEST = """
import pytest
import broken_backends


@pytest.fixture
def kv_store_factory(request):
    cls = getattr(broken_backends, request.config.getoption("--backend"))
    return lambda path: cls(path)


@pytest.fixture
def kv_store_durable():
    return False


def pytest_addoption(parser):
    parser.addoption("--backend", default="MemoryStore")
"""

TEST_MODULE = """
from timecoin.testing.storage_conformance import StorageConformance


class TestThirdPartyBackend(StorageConformance):
    pass
"""


@pytest.fixture
def kit_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(
        broken_backends=BROKEN_BACKENDS + "\nfrom timecoin_storage_memory import MemoryStore\n"
    )
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_backend=TEST_MODULE)
    pytester.syspathinsert()
    return pytester


def _failed_tests(result: pytest.RunResult) -> set[str]:
    _, _, failed = result.reprec.listoutcomes()  # type: ignore[attr-defined]
    return {rep.nodeid.rsplit("::", 1)[-1] for rep in failed}


def test_a_correct_backend_passes_from_a_plain_conftest(kit_project: pytest.Pytester):
    result = kit_project.runpytest_inprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0
    assert outcomes["passed"] >= 18
    # kv_store_durable = False turns the reopen test into a skip, not a failure.
    assert outcomes["skipped"] == 1


@pytest.mark.parametrize(
    ("backend", "must_fail"),
    [
        ("NaivePrefix", {"test_prefix_bounds_are_exact"}),
        (
            "Streaming",
            {"test_failed_batch_applies_nothing", "test_concurrent_readers_never_see_half_a_batch"},
        ),
        ("LiveIterator", {"test_iterator_sees_the_store_as_of_its_creation"}),
        ("Immortal", {"test_use_after_close_raises_storage_error"}),
    ],
)
def test_the_kit_catches_a_broken_backend(kit_project: pytest.Pytester, backend, must_fail):
    # Only the tests for the broken rule, to keep this quick.
    result = kit_project.runpytest_inprocess(
        "-p", "no:cacheprovider", f"--backend={backend}", "-k", " or ".join(sorted(must_fail))
    )
    failed = _failed_tests(result)
    assert must_fail <= failed, failed
