"""secp256k1 keys and ECDSA signatures through coincurve (libsecp256k1).

Signatures are RFC 6979 deterministic, 64-byte compact (r || s) and low-S, over
a 32-byte digest that the caller has already hashed (DESIGN.md, Protocol).
Verification rejects high-S signatures, so a third party cannot malleate a
valid signature into a second valid one.
"""

from __future__ import annotations

from dataclasses import dataclass

from coincurve import PrivateKey as _CPrivateKey
from coincurve import PublicKey as _CPublicKey
from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]  # cffi module
from coincurve.context import GLOBAL_CONTEXT

from timecoin.core.errors import BadPubkey, BadSignature
from timecoin.core.hashing import sha256
from timecoin.core.types import ADDRESS_PAYLOAD_LEN, HASH_LEN, PUBKEY_LEN, SIGNATURE_LEN

_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_CTX = GLOBAL_CONTEXT.ctx


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A private key and its 33-byte compressed public key."""

    secret: bytes
    pubkey: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """Generate a new key from the operating system's CSPRNG (via coincurve)."""
        return cls.from_secret(_CPrivateKey().secret)

    @classmethod
    def from_secret(cls, secret: bytes) -> KeyPair:
        """Return the key pair for a 32-byte secret; raises BadPubkey if it is out of range."""
        try:
            pk = _CPrivateKey(secret)
        except Exception as exc:  # coincurve raises ValueError for 0 or >= n
            raise BadPubkey(f"invalid private key: {exc}") from None
        return cls(secret=pk.secret, pubkey=pk.public_key.format(compressed=True))

    def sign(self, digest: bytes) -> bytes:
        """Sign a 32-byte *digest*; returns the 64-byte compact low-S signature."""
        return sign_digest(self.secret, digest)

    @property
    def address_payload(self) -> bytes:
        """20-byte address payload of this key's public key."""
        return pubkey_hash(self.pubkey)


def pubkey_hash(pubkey: bytes) -> bytes:
    """Address payload: the first 20 bytes of SHA-256(compressed pubkey)."""
    return sha256(pubkey)[:ADDRESS_PAYLOAD_LEN]


def has_pubkey_shape(pubkey: bytes) -> bool:
    """Tell whether *pubkey* is 33 bytes with a compressed-point prefix (no curve check).

    Decoders check this much; whether the point is on the curve is decided
    where the key is used (``validate_pubkey``, or the signature check, which
    parses the point anyway).
    """
    return len(pubkey) == PUBKEY_LEN and pubkey[0] in (2, 3)


def validate_pubkey(pubkey: bytes) -> None:
    """Raise BadPubkey unless *pubkey* is a 33-byte compressed point on the curve."""
    if not has_pubkey_shape(pubkey):
        raise BadPubkey(f"public key must be 33-byte compressed, got {len(pubkey)} bytes")
    try:
        _CPublicKey(pubkey)
    except Exception:
        raise BadPubkey("public key is not a point on secp256k1") from None


def sign_digest(secret: bytes, digest: bytes) -> bytes:
    """RFC 6979 ECDSA over a 32-byte digest; 64-byte compact, low-S (libsecp256k1 normalizes)."""
    if len(digest) != HASH_LEN:
        raise ValueError("digest must be 32 bytes")
    der = _CPrivateKey(secret).sign(digest, hasher=None)
    from coincurve.ecdsa import der_to_cdata, serialize_compact

    return bytes(serialize_compact(der_to_cdata(der)))


def verify_digest(pubkey: bytes, signature: bytes, digest: bytes) -> None:
    """Raise BadSignature unless *signature* is a valid low-S signature by *pubkey* of *digest*.

    An empty, short, long, high-S or otherwise malformed signature is rejected:
    there is no code path that accepts a transaction without verifying.
    """
    if not is_valid_signature(pubkey, signature, digest):
        raise BadSignature("signature does not verify", pubkey=pubkey.hex())


def is_valid_signature(pubkey: bytes, signature: bytes, digest: bytes) -> bool:
    """Tell whether *signature* is a 64-byte low-S signature by *pubkey* over *digest*."""
    if len(signature) != SIGNATURE_LEN or len(digest) != HASH_LEN or len(pubkey) != PUBKEY_LEN:
        return False
    # The scalar rules are libsecp256k1's own (tests/unit/test_tx.py holds them):
    # parse_compact refuses r or s >= n, verify refuses r or s == 0 and any s
    # in the upper half (only the low-S form of a signature is accepted).
    pk = ffi.new("secp256k1_pubkey *")
    if not lib.secp256k1_ec_pubkey_parse(_CTX, pk, pubkey, PUBKEY_LEN):
        return False
    sig = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_signature_parse_compact(_CTX, sig, signature):
        return False
    return bool(lib.secp256k1_ecdsa_verify(_CTX, sig, digest, pk))
