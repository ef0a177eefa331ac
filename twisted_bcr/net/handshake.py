# -*- test-case-name: tests.test_handshake -*-
"""
The connection handshake: the first two frames each way on every
connection, by which both ends prove which Ed25519 key they hold.

Each end sends a L{Hello} (protocol version, its verify key, 32 fresh random
bytes) as soon as the connection is up, then, once it has the other's
hello, a L{HandshakeProof}: its signature over

    CONTEXT || role || SHA-256(initiator's hello frame || responder's hello frame)

where C{role} is the signer's side (C{b"initiator"}, the end that
connected, or C{b"responder"}).  Both nonces are in the transcript, so a
proof is good for this connection only and cannot be replayed on another;
the role stops a proof from being reflected back to its maker.  After the
handshake the connection is bound to the peer's key: every message it
carries is handed to the core as coming from that key
(docs/SECURITY.md says what this does and does not protect against).

This module is the handshake's logic only (no sockets, no reactor):
L{Handshake} is fed the peer's frames and says what to send and when the
peer is authenticated.
"""

from __future__ import annotations

import enum
import hashlib

import nacl.exceptions
import nacl.signing

from twisted_bcr import codec, crypto
from twisted_bcr.messages import HandshakeProof, Hello

__all__ = ["CONTEXT", "HandshakeError", "Handshake", "HANDSHAKE_MAX_FRAME", "VERSION"]

#: The wire protocol's version; peers of other versions are refused at the
#: handshake, naming both.  2: RunReport carries faults_fired_at_us.
VERSION = 2
CONTEXT = b"twisted_bcr connection handshake v1\x00"
NONCE_BYTES = 32

#: No handshake frame is larger than this; a connection starts with it as
#: its frame limit, so an unauthenticated peer can make us buffer no more.
HANDSHAKE_MAX_FRAME = 256


class HandshakeError(Exception):
    """The peer broke the handshake: what it did, in one line."""


class _Stage(enum.Enum):
    AWAITING_HELLO = "awaiting hello"
    AWAITING_PROOF = "awaiting proof"
    DONE = "done"


class Handshake:
    """
    One end of one connection's handshake.

    Send L{hello_frame} when the connection is made; pass each frame that
    arrives to L{receive} until L{peer_key} is set.  L{receive} returns the
    frame to send in answer (or None) and raises L{HandshakeError} if the
    peer misbehaves; the connection must then be dropped.
    """

    def __init__(self, key: crypto.KeyPair, initiator: bool, nonce: bytes) -> None:
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a handshake nonce is {NONCE_BYTES} bytes")
        self._key = key
        self._initiator = initiator
        self.hello_frame = codec.encode(Hello(VERSION, key.verify_key_bytes, nonce))
        self._peer_hello_frame = b""
        self._peer_verify_key: nacl.signing.VerifyKey | None = None
        self._stage = _Stage.AWAITING_HELLO
        #: The key the peer proved it holds, once it has.
        self.peer_key: bytes | None = None

    def _transcript(self, signer_is_initiator: bool) -> bytes:
        if self._initiator:
            hellos = self.hello_frame + self._peer_hello_frame
        else:
            hellos = self._peer_hello_frame + self.hello_frame
        role = b"initiator" if signer_is_initiator else b"responder"
        return CONTEXT + role + hashlib.sha256(hellos).digest()

    def receive(self, frame: bytes) -> bytes | None:
        """Take the peer's next handshake frame; return the frame to answer with."""
        if len(frame) > HANDSHAKE_MAX_FRAME:
            raise HandshakeError(f"handshake frame of {len(frame)} bytes")
        try:
            message = codec.decode_handshake(frame)
        except codec.BadMessage as e:
            raise HandshakeError(f"not a handshake frame: {e}") from None
        if self._stage is _Stage.AWAITING_HELLO:
            if not isinstance(message, Hello):
                raise HandshakeError("a proof before the hello")
            if message.version != VERSION:
                raise HandshakeError(f"protocol version {message.version}, not {VERSION}")
            if len(message.nonce) != NONCE_BYTES:
                raise HandshakeError("a nonce that is not 32 bytes")
            try:
                self._peer_verify_key = nacl.signing.VerifyKey(message.verify_key)
            except (nacl.exceptions.CryptoError, ValueError, TypeError):
                raise HandshakeError("an invalid verify key") from None
            self._peer_hello_frame = frame
            self._stage = _Stage.AWAITING_PROOF
            signature = self._key.sign_bytes(self._transcript(self._initiator))
            return codec.encode(HandshakeProof(signature))
        if self._stage is _Stage.AWAITING_PROOF:
            if not isinstance(message, HandshakeProof):
                raise HandshakeError("a second hello")
            assert self._peer_verify_key is not None
            try:
                self._peer_verify_key.verify(
                    self._transcript(not self._initiator), message.signature
                )
            except (nacl.exceptions.CryptoError, ValueError, TypeError):
                raise HandshakeError("a proof that does not verify") from None
            self._stage = _Stage.DONE
            self.peer_key = bytes(self._peer_verify_key)
            return None
        raise HandshakeError("handshake frames after the handshake")
