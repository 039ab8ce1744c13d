"""Address encoding: fixed vectors, round trips and rejection of every mutation."""

from __future__ import annotations

import hashlib

import base58
import based58
import pytest
from hypothesis import given
from hypothesis import strategies as st

from timecoin.core.address import (
    decode_address,
    encode_address,
    is_valid_address,
    parse_address,
)
from timecoin.core.errors import BadAddress, DecodeError, Reason
from timecoin.core.keys import KeyPair
from timecoin.core.types import Network

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# secp256k1 generator G: the public key of secret 1.
G_PUBKEY = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
G_PAYLOAD = bytes.fromhex("0f715baf5d4c2ed329785cef29e562f73488c8a2")
G_MAINNET = "TIME12Qew9628up4XwNAGWsP66GfaBhidphPdc"
G_TESTNET = "TIME02Qew9628up4XwNAGWsP66GfaBhibAimRW"


def _reference_address(pubkey: bytes, digit: str) -> str:
    """Independent re-implementation of DESIGN.md's address rule (no base58 package)."""
    payload = hashlib.sha256(pubkey).digest()[:20]
    check = hashlib.sha256(hashlib.sha256(digit.encode() + payload).digest()).digest()[:4]
    raw = payload + check
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    out = "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out
    return "TIME" + digit + out


def test_fixed_vector_from_known_pubkey() -> None:
    kp = KeyPair.from_secret((1).to_bytes(32, "big"))
    assert kp.pubkey == G_PUBKEY
    assert kp.address_payload == G_PAYLOAD
    assert encode_address(G_PAYLOAD, Network.MAIN) == G_MAINNET
    assert encode_address(G_PAYLOAD, Network.TEST) == G_TESTNET
    assert _reference_address(G_PUBKEY, "1") == G_MAINNET
    assert _reference_address(G_PUBKEY, "0") == G_TESTNET
    assert decode_address(G_MAINNET, Network.MAIN) == G_PAYLOAD
    assert decode_address(G_TESTNET, Network.TEST) == G_PAYLOAD
    assert parse_address(G_MAINNET) == (Network.MAIN, G_PAYLOAD)
    assert parse_address(G_TESTNET) == (Network.TEST, G_PAYLOAD)


def test_leading_zero_payload_keeps_its_zero_bytes() -> None:
    zero = bytes(20)
    text = encode_address(zero, Network.MAIN)
    assert text == "TIME1111111111111111111112qhRwS"
    assert decode_address(text, Network.MAIN) == zero


def test_wrong_network_rejected() -> None:
    with pytest.raises(BadAddress, match="mainnet"):
        decode_address(G_MAINNET, Network.TEST)
    with pytest.raises(BadAddress):
        decode_address(G_TESTNET, Network.MAIN)
    assert not is_valid_address(G_MAINNET, Network.TEST)
    assert is_valid_address(G_MAINNET, Network.MAIN)


def test_network_digit_is_covered_by_checksum() -> None:
    # Changing only the digit must break the checksum, not yield a valid other-network address.
    swapped = "TIME0" + G_MAINNET[5:]
    with pytest.raises(BadAddress, match="checksum"):
        parse_address(swapped)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "TIME",
        "TIME1",
        "time12Qew9628up4XwNAGWsP66GfaBhidphPdc",  # lowercase prefix
        "TYME12Qew9628up4XwNAGWsP66GfaBhidphPdc",  # wrong prefix
        "TIME22Qew9628up4XwNAGWsP66GfaBhidphPdc",  # unknown network digit
        "TIME12Qew9628up4XwNAGWsP66GfaBhidphPd0",  # '0' is not base58
        "TIME12Qew9628up4XwNAGWsP66GfaBhidphPdl",  # 'l' is not base58
        "TIME12Qew9628up4XwNAGWsP66GfaBhidphPdc ",  # trailing space
        " TIME12Qew9628up4XwNAGWsP66GfaBhidphPdc",
        "TIME12Qew9628up4XwNAGWsP66GfaBhidphPdc\n",
        "TIME12Qew9628up4XwNAGWsP66GfaBhidphPdé",  # non-ASCII
        "TIME112Qew9628up4XwNAGWsP66GfaBhidphPdc",  # extra leading '1' = extra zero byte
        "TIME12Qew9628up4XwNAGWsP66GfaBhidphPd",  # truncated
        "TIME12Qew9628up4XwNAGWsP66GfaBhidphPdcc",  # too long
        "TIME1" + "z" * 200,
    ],
)
def test_malformed_rejected(text: str) -> None:
    with pytest.raises(BadAddress) as info:
        parse_address(text)
    assert info.value.reason is Reason.BAD_ADDRESS
    assert isinstance(info.value, DecodeError)


def test_non_string_rejected() -> None:
    with pytest.raises(BadAddress):
        parse_address(b"TIME1abc")  # type: ignore[arg-type]


def test_encode_rejects_wrong_payload_length() -> None:
    with pytest.raises(ValueError):
        encode_address(bytes(19), Network.MAIN)


networks = st.sampled_from([Network.MAIN, Network.TEST])
payloads = st.binary(min_size=20, max_size=20)


@given(payloads, networks)
def test_round_trip(payload: bytes, network: Network) -> None:
    text = encode_address(payload, network)
    assert text.startswith("TIME" + ("1" if network is Network.MAIN else "0"))
    assert decode_address(text, network) == payload
    assert parse_address(text) == (network, payload)


@given(payloads, networks, st.data())
def test_any_single_character_change_is_rejected(
    payload: bytes, network: Network, data: st.DataObject
) -> None:
    text = encode_address(payload, network)
    pos = data.draw(st.integers(0, len(text) - 1), label="pos")
    replacement = data.draw(
        st.sampled_from(sorted(set(_B58 + "TIME0O" + "xyz") - {text[pos]})), label="char"
    )
    mutated = text[:pos] + replacement + text[pos + 1 :]
    with pytest.raises(BadAddress):
        decode_address(mutated, network)


@given(payloads, networks, st.data())
def test_adjacent_transposition_is_rejected(
    payload: bytes, network: Network, data: st.DataObject
) -> None:
    text = encode_address(payload, network)
    pos = data.draw(st.integers(0, len(text) - 2), label="pos")
    if text[pos] == text[pos + 1]:
        return
    mutated = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]
    with pytest.raises(BadAddress):
        decode_address(mutated, network)


@given(st.text(max_size=60))
def test_arbitrary_text_only_raises_bad_address(text: str) -> None:
    try:
        network, payload = parse_address(text)
    except BadAddress:
        return
    assert encode_address(payload, network) == text


@given(st.text(alphabet=_B58, min_size=1, max_size=40))
def test_base58_has_one_spelling_per_24_bytes(body: str) -> None:
    # parse_address relies on this instead of re-encoding every address it decodes.
    raw = based58.b58decode(body.encode())
    if len(raw) == 24:
        assert based58.b58encode(raw).decode() == body


@given(st.text(alphabet=_B58, max_size=40), st.binary(max_size=30))
def test_the_compiled_base58_agrees_with_the_reference_one(body: str, data: bytes) -> None:
    # based58 (Rust) decodes addresses; the pure-Python base58 package is the reference.
    assert based58.b58decode(body.encode()) == base58.b58decode(body)
    assert based58.b58encode(data) == base58.b58encode(data)


def test_decoding_is_cached_but_errors_are_not() -> None:
    assert parse_address(G_MAINNET) == parse_address(G_MAINNET)
    for _ in range(2):
        with pytest.raises(BadAddress):
            parse_address(G_MAINNET[:-1] + "x")
