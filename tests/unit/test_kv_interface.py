"""The KV interface's shared pieces: WriteBatch and range bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timecoin.storage.kv import WriteBatch, key_bounds, prefix_upper_bound

keys = st.binary(max_size=4).map(lambda b: bytes(x if x % 3 else 0xFF for x in b))


def test_write_batch_keeps_operations_in_order():
    batch = WriteBatch()
    batch.put(b"a", b"1")
    batch.delete(b"a")
    batch.put(bytearray(b"b"), memoryview(b"2"))
    assert list(batch) == [(b"a", b"1"), (b"a", None), (b"b", b"2")]
    assert len(batch) == 3 and batch
    assert not WriteBatch()
    assert list(WriteBatch([(b"x", None), (b"y", b"")])) == [(b"x", None), (b"y", b"")]


@pytest.mark.parametrize("bad", ["text", 1, None])
def test_write_batch_rejects_non_bytes_where_the_mistake_is(bad):
    batch = WriteBatch()
    with pytest.raises(TypeError):
        batch.put(bad, b"v")
    with pytest.raises(TypeError):
        batch.put(b"k", bad if bad is not None else "x")
    with pytest.raises(TypeError):
        batch.delete(bad)
    assert len(batch) == 0


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [
        (b"", None),
        (b"a", b"b"),
        (b"a\xff", b"b"),
        (b"a\xff\xff", b"b"),
        (b"\xff", None),
        (b"\xff\xff", None),
        (b"\x00", b"\x01"),
        (b"a\x00", b"a\x01"),
        (b"\x01\xff\x02", b"\x01\xff\x03"),
    ],
)
def test_prefix_upper_bound(prefix: bytes, bound: bytes | None):
    assert prefix_upper_bound(prefix) == bound


@given(keys, st.none() | keys, st.none() | keys, st.lists(keys, max_size=30))
def test_key_bounds_select_exactly_the_filtered_keys(prefix, start, stop, sample):
    def wanted(k: bytes) -> bool:
        return k.startswith(prefix) and (start is None or k >= start) and (stop is None or k < stop)

    bounds = key_bounds(prefix, start, stop)
    for k in [*sample, prefix, prefix + b"\x00", prefix + b"\xff"]:
        if bounds is None:
            assert not wanted(k)
        else:
            low, high = bounds
            assert wanted(k) == (k >= low and (high is None or k < high))


def test_write_batch_extend_keeps_order_and_checks_like_put():
    from timecoin.storage.kv import WriteBatch

    b = WriteBatch()
    b.put(b"a", b"1")
    b.extend([(b"b", b"2"), (b"a", None)])
    assert list(b) == [(b"a", b"1"), (b"b", b"2"), (b"a", None)]
    b.extend([(bytearray(b"c"), memoryview(b"3"))])  # converted, as put does
    assert list(b)[-1] == (b"c", b"3")
    with pytest.raises(TypeError):
        b.extend([(b"d", "not bytes")])
