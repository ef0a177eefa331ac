"""
Tests for L{twisted_bcr.net.handshake}: each end proves its key, bound to
this connection's nonces, or the connection is refused.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr import codec, crypto
from twisted_bcr.messages import HandshakeProof, Hello
from twisted_bcr.net.handshake import VERSION, Handshake, HandshakeError

ALICE = crypto.KeyPair.from_seed(b"a" * 32)
BOB = crypto.KeyPair.from_seed(b"b" * 32)
MALLORY = crypto.KeyPair.from_seed(b"m" * 32)


def pair() -> tuple[Handshake, Handshake]:
    return (
        Handshake(ALICE, initiator=True, nonce=os.urandom(32)),
        Handshake(BOB, initiator=False, nonce=os.urandom(32)),
    )


def run(initiator: Handshake, responder: Handshake) -> None:
    proof_from_responder = responder.receive(initiator.hello_frame)
    proof_from_initiator = initiator.receive(responder.hello_frame)
    assert proof_from_responder is not None and proof_from_initiator is not None
    assert responder.receive(proof_from_initiator) is None
    assert initiator.receive(proof_from_responder) is None


class HandshakeTests(SynchronousTestCase):
    def test_both_learn_the_other_key(self) -> None:
        """After two frames each way, each end knows the key the other proved."""
        alice, bob = pair()
        run(alice, bob)
        self.assertEqual(alice.peer_key, BOB.verify_key_bytes)
        self.assertEqual(bob.peer_key, ALICE.verify_key_bytes)

    def test_claimed_key_without_private_half(self) -> None:
        """Mallory can claim Alice's key in her hello but cannot prove it."""
        bob = Handshake(BOB, initiator=False, nonce=os.urandom(32))
        mallory = Handshake(MALLORY, initiator=True, nonce=os.urandom(32))
        claimed = codec.encode(Hello(VERSION, ALICE.verify_key_bytes, os.urandom(32)))
        bob.receive(claimed)
        mallory._peer_hello_frame = bob.hello_frame
        forged = codec.encode(HandshakeProof(MALLORY.sign_bytes(b"anything")))
        self.assertRaises(HandshakeError, bob.receive, forged)
        self.assertIsNone(bob.peer_key)

    def test_replayed_proof(self) -> None:
        """A proof recorded on one connection is worthless on the next (fresh nonces)."""
        alice, bob = pair()
        bob.receive(alice.hello_frame)
        recorded_hello, recorded_proof = alice.hello_frame, alice.receive(bob.hello_frame)
        assert recorded_proof is not None
        bob_again = Handshake(BOB, initiator=False, nonce=os.urandom(32))
        bob_again.receive(recorded_hello)
        self.assertRaises(HandshakeError, bob_again.receive, recorded_proof)

    def test_reflected_proof(self) -> None:
        """A responder's own proof sent back to it does not authenticate anybody."""
        alice, bob = pair()
        bob_proof = bob.receive(alice.hello_frame)
        assert bob_proof is not None
        self.assertRaises(HandshakeError, bob.receive, bob_proof)

    def test_malformed(self) -> None:
        """Garbage, a proof first, a wrong version, a short nonce: each refused."""
        frames = [
            b"\xff\x00junk",
            codec.encode(HandshakeProof(b"x" * 64)),
            codec.encode(Hello(VERSION + 1, ALICE.verify_key_bytes, b"n" * 32)),
            codec.encode(Hello(VERSION, ALICE.verify_key_bytes, b"n" * 8)),
            codec.encode(Hello(VERSION, b"short", b"n" * 32)),
            b"x" * 1000,
        ]
        for frame in frames:
            with self.subTest(frame=frame[:16]):
                bob = Handshake(BOB, initiator=False, nonce=os.urandom(32))
                self.assertRaises(HandshakeError, bob.receive, frame)
                self.assertIsNone(bob.peer_key)

    def test_nothing_after_the_handshake(self) -> None:
        """Handshake frames after it is done are a protocol error."""
        alice, bob = pair()
        run(alice, bob)
        self.assertRaises(HandshakeError, bob.receive, alice.hello_frame)
