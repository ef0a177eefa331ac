# -*- test-case-name: tests.test_crypto -*-
"""
Signatures and hashes of the protocol (SPEC §2.4): Ed25519 via PyNaCl over the
canonical bytes of L{twisted_bcr.codec}, and raw SHA-256.

What gets signed is always C{codec.encode(statement)}; a L{messages.Signed}
or L{messages.Sealed} carries those bytes and the 64-byte signature over them.
A L{Verifier} checks each (body, signature, key) once per process and
remembers the verdict, because the same statements reach a replica again and
again inside growing proofs and shuttles (DESIGN.md §6).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from typing import Any, TypeVar, overload

import attrs
import nacl.exceptions
import nacl.signing

from twisted_bcr import codec, messages
from twisted_bcr.files import UnsafeFileError, read_private_file, write_atomically

__all__ = [
    "BadSignature",
    "KeyPair",
    "Verifier",
    "corrupt",
    "read_verify_key",
    "result_hash",
    "seal",
    "sealed_signing_bytes",
    "sign",
    "state_hash",
]

_T = TypeVar("_T")
_Envelope = TypeVar("_Envelope", messages.Signed, messages.Sealed)

SEED_BYTES = 32
VERIFY_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class BadSignature(Exception):
    """A signature that does not verify with the key it was checked against."""


# ---------------------------------------------------------------------------
# Keys


@attrs.frozen(repr=False)
class KeyPair:
    """An Ed25519 signing key and its public half."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh random key pair."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """The key pair of a 32-byte seed (see L{to_seed})."""
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
        return cls(nacl.signing.SigningKey(bytes(seed)))

    def to_seed(self) -> bytes:
        """The 32-byte secret seed; whoever has it can sign as this key."""
        return bytes(self.signing_key)

    @property
    def verify_key_bytes(self) -> bytes:
        """The 32-byte public key that checks this key's signatures."""
        return bytes(self.signing_key.verify_key)

    def sign_bytes(self, data: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of C{data}."""
        return self.signing_key.sign(data).signature

    def save(self, path: str | os.PathLike[str]) -> None:
        """
        Write the seed as hex to C{path} (mode 0600) and the public key as hex
        to C{path + ".pub"}.  Each file is replaced atomically, so a crash
        never leaves a half-written key behind.
        """
        path = os.fspath(path)
        write_atomically(path, self.to_seed().hex() + "\n", 0o600)
        write_atomically(path + ".pub", self.verify_key_bytes.hex() + "\n", 0o644)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyPair:
        """
        The key pair L{save} wrote to C{path}, read only if the file is still
        private (see L{read_private_file}): a seed others could read may have
        leaked, and one they could write or link may not be ours.

        @raise UnsafeFileError: C{path} is a symlink, not a regular file, not
            ours, or accessible by group or others.
        @raise ValueError: the file does not hold a hex seed.
        @raise OSError: the file cannot be read.
        """
        path = os.fspath(path)
        try:
            text = read_private_file(path).strip()
            seed = bytes.fromhex(text)
        except UnsafeFileError:
            raise
        except ValueError:
            # Not UTF-8, or not hex.
            raise ValueError(f"{path}: not a hex seed") from None
        try:
            return cls.from_seed(seed)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        # Never the secret half, so a key pair can be logged or printed safely.
        return f"KeyPair(verify_key={self.verify_key_bytes.hex()})"


def read_verify_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte public key in a C{.pub} file written by L{KeyPair.save}."""
    with open(path, encoding="ascii") as public_file:
        text = public_file.read().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{os.fspath(path)}: not a hex public key") from None
    if len(key) != VERIFY_KEY_BYTES:
        raise ValueError(f"{os.fspath(path)}: a public key is {VERIFY_KEY_BYTES} bytes")
    return key


# ---------------------------------------------------------------------------
# Signing


def sign(key: KeyPair, statement: object) -> messages.Signed:
    """C{statement}'s canonical bytes, signed by C{key}."""
    body = codec.encode(statement)
    return messages.Signed(body=body, signature=key.sign_bytes(body))


def seal(
    key: KeyPair,
    sender: str,
    signer: str,
    message: object,
    recipient: bytes,
    epoch: bytes,
    configuration: int = -1,
) -> messages.Sealed:
    """
    A control message signed by its sender, for one recipient.

    @param sender: the address replies should go to.
    @param signer: which key must verify it (C{"olympus"}, C{"spare"},
        C{"replica c.i"}, C{"client <i>"}).
    @param recipient: the verify key of the one process it is meant for.
    @param epoch: Olympus's boot epoch (empty before the sender knows it).
    @param configuration: the configuration it concerns, or -1.
    @raise ValueError: C{message} is not one of L{messages.SEALED_MESSAGES}.
    """
    if type(message) not in _SEALED_TYPES:
        raise ValueError(f"{type(message).__name__} does not travel sealed")
    unsigned = messages.Sealed(
        sender=sender, signer=signer, recipient=recipient, epoch=epoch,
        configuration=configuration, body=codec.encode(message), signature=b"",
    )
    return attrs.evolve(unsigned, signature=key.sign_bytes(codec.encode(unsigned)))


def sealed_signing_bytes(sealed: messages.Sealed) -> bytes:
    """What the signature of C{sealed} is over: the envelope, signature empty."""
    return codec.encode(attrs.evolve(sealed, signature=b""))


def corrupt(envelope: _Envelope) -> _Envelope:
    """
    The same envelope with an invalid signature: its first byte plus 1 mod
    256, which is how SPEC §2.4 has C{invalid_order_sig()} and
    C{invalid_result_sig()} spoil a statement.
    """
    signature = envelope.signature
    if not signature:
        raise ValueError("nothing to corrupt: empty signature")
    spoiled = bytes([(signature[0] + 1) % 256]) + signature[1:]
    return attrs.evolve(envelope, signature=spoiled)


_SEALED_TYPES = frozenset(messages.SEALED_MESSAGES)


# ---------------------------------------------------------------------------
# Verifying


class Verifier:
    """
    Checks signatures, each small genuine statement at most once per process.

    Positive verdicts are remembered in a bounded LRU keyed by (signature,
    verify key, body).  The body belongs in the key: with (signature, key)
    alone, a peer could pair a genuine signature with a forged body and be
    handed the genuine statement back.

    What is remembered is bounded in both ways an attacker could push it:
    failed verifications are never remembered (anyone can send garbage with
    a bad signature, and remembering it let 50 messages of 4 MB grow Olympus
    to 255 MB), and only bodies of at most L{MAX_CACHED_BODY} bytes are, so
    the cache holds at most C{max_entries} such bodies.  The statements that
    come back again and again inside proofs and shuttles are small; the big
    ones (a whole dictionary) are rare control-plane messages, checked each
    time.
    """

    DEFAULT_MAX_ENTRIES = 65536

    #: Bodies longer than this (in bytes) are verified every time, never cached.
    MAX_CACHED_BODY = 4096

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a verifier must remember at least one verdict")
        self._max_entries = max_entries
        self._verdicts: OrderedDict[tuple[bytes, bytes, bytes], object] = OrderedDict()
        self._verify_keys: dict[bytes, nacl.signing.VerifyKey] = {}
        #: How many Ed25519 verifications actually ran (cache misses).
        self.signature_checks = 0

    @property
    def cached_verdicts(self) -> int:
        """How many positive verdicts are remembered (at most C{max_entries})."""
        return len(self._verdicts)

    @overload
    def verify(
        self, signed: messages.Signed, verify_key: bytes, expected_type: type[_T]
    ) -> _T: ...

    @overload
    def verify(
        self,
        signed: messages.Signed,
        verify_key: bytes,
        expected_type: tuple[type, ...],
    ) -> Any: ...

    def verify(
        self,
        signed: messages.Signed,
        verify_key: bytes,
        expected_type: type | tuple[type, ...],
    ) -> Any:
        """
        The statement C{signed} carries, once its signature checks out.

        @param verify_key: the 32-byte public key of whoever must have signed
            (e.g. replica C{j} for position C{j} of a proof).
        @param expected_type: the class, or classes, the statement must be.
        @raise BadSignature: the signature does not verify with C{verify_key}.
        @raise codec.BadMessage: the signed body is not a canonical encoding
            of C{expected_type}.
        """
        statement = self._check(signed.body, signed.signature, verify_key)
        if not isinstance(statement, expected_type):
            raise codec.BadMessage(f"unexpected signed {type(statement).__name__}")
        return statement

    def open_sealed(self, sealed: messages.Sealed, verify_key: bytes) -> object:
        """
        The control message inside C{sealed}, once its signature checks out.

        The signature covers the whole envelope, so C{sender}, C{signer},
        C{recipient}, C{epoch} and C{configuration} are as the signer wrote
        them; checking that they fit (is the recipient us?) is the caller's.

        Never cached: the key is often the sender's own (Olympus checks a
        sealed message against the key its connection proved), so a stranger
        with a key of its own could otherwise fill the cache with envelopes
        it signed itself; and control messages are not met twice.

        @raise BadSignature: the signature does not verify with C{verify_key}.
        @raise codec.BadMessage: the body is not one of
            L{messages.SEALED_MESSAGES}.
        """
        self._verify_signature(sealed_signing_bytes(sealed), sealed.signature, verify_key)
        message = codec.decode_sealed_body(sealed.body)
        if type(message) not in _SEALED_TYPES:
            raise codec.BadMessage(f"unexpected sealed {type(message).__name__}")
        return message

    def trust_own(
        self, signed: messages.Signed, verify_key: bytes, statement: object
    ) -> None:
        """
        Remember that C{signed}, which this process has just made with its
        own key from C{statement}, verifies: a replica meets its own
        statements again in the proofs that come back to it, and checking
        them would only cost time.  Like verified statements, only bodies of
        at most L{MAX_CACHED_BODY} bytes are remembered.
        """
        self._remember((signed.signature, verify_key, signed.body), statement)

    def _remember(self, cache_key: tuple[bytes, bytes, bytes], statement: object) -> None:
        """Cache a positive verdict if its body is small enough, evicting the oldest."""
        if len(cache_key[2]) > self.MAX_CACHED_BODY:
            return
        verdicts = self._verdicts
        try:
            verdicts[cache_key] = statement
        except TypeError:
            # Unhashable (a bytearray body): simply not remembered.
            return
        verdicts.move_to_end(cache_key)
        while len(verdicts) > self._max_entries:
            verdicts.popitem(last=False)

    def _check(self, body: bytes, signature: bytes, verify_key: bytes) -> object:
        cache_key = (signature, verify_key, body)
        verdicts = self._verdicts
        try:
            statement = verdicts[cache_key]
        except (KeyError, TypeError):
            # TypeError: unhashable junk in place of bytes; _judge rejects it.
            # _judge raises on a failure, so only successes are remembered.
            statement = self._judge(body, signature, verify_key)
            self._remember(cache_key, statement)
        else:
            verdicts.move_to_end(cache_key)
        return statement

    def _judge(self, body: bytes, signature: bytes, verify_key: bytes) -> object:
        """
        Verify and decode: the decoded statement.

        @raise BadSignature: the key is invalid or the signature does not verify.
        @raise codec.BadMessage: the genuinely signed body is not a message.
        """
        self._verify_signature(body, signature, verify_key)
        return codec.decode(body)

    def _verify_signature(self, body: bytes, signature: bytes, verify_key: bytes) -> None:
        """One real Ed25519 check; raises L{BadSignature}."""
        try:
            key = self._verify_key(verify_key)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise BadSignature("invalid verify key") from None
        self.signature_checks += 1
        try:
            key.verify(body, signature)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise BadSignature("signature does not verify") from None

    def _verify_key(self, verify_key: bytes) -> nacl.signing.VerifyKey:
        key = self._verify_keys.get(verify_key)
        if key is None:
            key = nacl.signing.VerifyKey(verify_key)
            if len(self._verify_keys) >= self._max_entries:
                # Keys come from configurations, so this only guards memory.
                self._verify_keys.clear()
            self._verify_keys[verify_key] = key
        return key


# ---------------------------------------------------------------------------
# Hashes


def result_hash(result: str) -> bytes:
    """Raw SHA-256 of the UTF-8 bytes of a result (SPEC §2.4)."""
    return hashlib.sha256(result.encode("utf-8")).digest()


def state_hash(state: dict[str, str]) -> bytes:
    """
    Raw SHA-256 of the dictionary's canonical JSON: sorted keys, no
    whitespace, UTF-8 (SPEC §2.4), so insertion order never matters.
    """
    canonical = json.dumps(
        state, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).digest()
