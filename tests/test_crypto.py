"""
Tests for L{twisted_bcr.crypto}: Ed25519 signing and verification over the
canonical encoding, the verifier's verdict cache, and the hashes of SPEC §2.4.
"""

from __future__ import annotations

import hashlib
import os
import stat

import attrs
import nacl.encoding
import nacl.exceptions
import nacl.hash
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr import codec, crypto, messages
from twisted_bcr.codec import BadMessage
from twisted_bcr.crypto import BadSignature, KeyPair, Verifier
from twisted_bcr.files import UnsafeFileError

# Key generation is the slow part of these tests; one pair per role is enough.
REPLICA = KeyPair.generate()
OTHER = KeyPair.generate()

#: An Olympus boot epoch for sealed envelopes.
EPOCH = b"e" * 16

OPERATION = messages.Operation("append", ("movie", " wars"))
ORDER = messages.OrderStatement(
    configuration=0, slot=4, client=1, seq=2, operation=OPERATION
)


def flip_bit(data: bytes, bit: int) -> bytes:
    """C{data} with bit number C{bit} inverted."""
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


class KeyPairTests(SynchronousTestCase):
    """Key pairs sign, reproduce from their seed and persist."""

    def test_sizes(self) -> None:
        """Public keys are 32 bytes and signatures 64."""
        self.assertEqual(len(REPLICA.verify_key_bytes), 32)
        self.assertEqual(len(REPLICA.sign_bytes(b"x")), 64)

    def test_seed_round_trip(self) -> None:
        """A key pair rebuilt from its seed has the same public key and signatures."""
        again = KeyPair.from_seed(REPLICA.to_seed())
        self.assertEqual(again.verify_key_bytes, REPLICA.verify_key_bytes)
        self.assertEqual(again.sign_bytes(b"same"), REPLICA.sign_bytes(b"same"))

    def test_bad_seed(self) -> None:
        """Seeds of the wrong length are refused."""
        self.assertRaises(ValueError, KeyPair.from_seed, b"short")

    def test_repr_hides_secret(self) -> None:
        """The repr shows the public key and never the seed."""
        text = repr(REPLICA)
        self.assertIn(REPLICA.verify_key_bytes.hex(), text)
        self.assertNotIn(REPLICA.to_seed().hex(), text)

    def test_save_and_load(self) -> None:
        """save writes a 0600 hex seed and a hex .pub; both read back."""
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "olympus.key")
        REPLICA.save(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as seed_file:
            self.assertEqual(seed_file.read().strip(), REPLICA.to_seed().hex())
        loaded = KeyPair.load(path)
        self.assertEqual(loaded.to_seed(), REPLICA.to_seed())
        self.assertEqual(
            crypto.read_verify_key(path + ".pub"), REPLICA.verify_key_bytes
        )
        self.assertEqual(
            sorted(os.listdir(directory)), ["olympus.key", "olympus.key.pub"]
        )

    def test_save_tightens_mode(self) -> None:
        """Saving over a world-readable file leaves a 0600 file."""
        path = self.mktemp()
        with open(path, "w") as old:
            old.write("old")
        os.chmod(path, 0o644)
        REPLICA.save(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_load_garbage(self) -> None:
        """A private key file that is not a hex seed is refused, naming the file."""
        path = self.mktemp()
        for junk in (b"not hex\n", b"\xff\xfe\n", b"00" * 31 + b"\n"):
            with open(path, "wb") as junk_file:
                junk_file.write(junk)
            # Private, so that the refusal is about the content.
            os.chmod(path, 0o600)
            error = self.assertRaises(ValueError, KeyPair.load, path)
            self.assertNotIsInstance(error, UnsafeFileError)
            self.assertTrue(str(error).startswith(f"{path}: "), str(error))

    def test_load_refuses_symlink(self) -> None:
        """A symlink at the key's name is refused even if it points at a good key."""
        directory = self.mktemp()
        os.mkdir(directory)
        real = os.path.join(directory, "real.key")
        REPLICA.save(real)
        link = os.path.join(directory, "olympus.key")
        os.symlink(real, link)
        error = self.assertRaises(UnsafeFileError, KeyPair.load, link)
        self.assertIn("symbolic link", str(error))

    def test_load_refuses_readable_by_others(self) -> None:
        """A seed that group or others can read is refused, as ssh refuses such keys."""
        path = self.mktemp()
        REPLICA.save(path)
        for mode in (0o640, 0o644, 0o604):
            os.chmod(path, mode)
            error = self.assertRaises(UnsafeFileError, KeyPair.load, path)
            self.assertIn(f"{mode:04o}", str(error))

    def test_save_public_half_readable(self) -> None:
        """The .pub file is 0644 even under a strict umask: it is meant to be copied."""
        old = os.umask(0o077)
        self.addCleanup(os.umask, old)
        path = self.mktemp()
        REPLICA.save(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(path + ".pub").st_mode), 0o644)


class SignAndVerifyTests(SynchronousTestCase):
    """Signed statements verify with the signer's key and nothing else."""

    def test_sign_verify(self) -> None:
        """A signed statement verifies and decodes to the original statement."""
        signed = crypto.sign(REPLICA, ORDER)
        self.assertEqual(signed.body, codec.encode(ORDER))
        verified = Verifier().verify(
            signed, REPLICA.verify_key_bytes, messages.OrderStatement
        )
        self.assertEqual(verified, ORDER)

    def test_wrong_key(self) -> None:
        """A statement signed by one replica does not verify as another's."""
        signed = crypto.sign(REPLICA, ORDER)
        self.assertRaises(
            BadSignature,
            Verifier().verify,
            signed,
            OTHER.verify_key_bytes,
            messages.OrderStatement,
        )

    def test_wrong_type(self) -> None:
        """A genuine statement of an unexpected class is a BadMessage."""
        signed = crypto.sign(REPLICA, ORDER)
        self.assertRaises(
            BadMessage,
            Verifier().verify,
            signed,
            REPLICA.verify_key_bytes,
            messages.ResultStatement,
        )
        self.assertEqual(
            Verifier().verify(
                signed,
                REPLICA.verify_key_bytes,
                (messages.ResultStatement, messages.OrderStatement),
            ),
            ORDER,
        )

    def test_undecodable_body(self) -> None:
        """A correctly signed body that is not a message is a BadMessage."""
        body = b"\xfe junk"
        signed = messages.Signed(body, REPLICA.sign_bytes(body))
        self.assertRaises(
            BadMessage,
            Verifier().verify,
            signed,
            REPLICA.verify_key_bytes,
            messages.OrderStatement,
        )

    def test_malformed_signature_and_key(self) -> None:
        """Signatures and keys of the wrong length are BadSignature, not crashes."""
        signed = crypto.sign(REPLICA, ORDER)
        short = messages.Signed(signed.body, signed.signature[:63])
        self.assertRaises(
            BadSignature,
            Verifier().verify,
            short,
            REPLICA.verify_key_bytes,
            messages.OrderStatement,
        )
        self.assertRaises(
            BadSignature,
            Verifier().verify,
            signed,
            b"\x00" * 31,
            messages.OrderStatement,
        )

    @given(st.data())
    def test_any_bit_flip_fails(self, data: st.DataObject) -> None:
        """Flipping any single bit of the body or the signature breaks verification."""
        signed = crypto.sign(REPLICA, ORDER)
        verifier = Verifier()
        if data.draw(st.booleans()):
            bit = data.draw(st.integers(0, len(signed.body) * 8 - 1))
            tampered = messages.Signed(flip_bit(signed.body, bit), signed.signature)
        else:
            bit = data.draw(st.integers(0, len(signed.signature) * 8 - 1))
            tampered = messages.Signed(signed.body, flip_bit(signed.signature, bit))
        self.assertRaises(
            BadSignature,
            verifier.verify,
            tampered,
            REPLICA.verify_key_bytes,
            messages.OrderStatement,
        )

    def test_every_bit_flip_fails(self) -> None:
        """Exhaustively, no single-bit change of a signed statement verifies."""
        signed = crypto.sign(REPLICA, ORDER)
        verifier = Verifier()
        for bit in range(len(signed.body) * 8):
            tampered = messages.Signed(flip_bit(signed.body, bit), signed.signature)
            self.assertRaises(
                BadSignature,
                verifier.verify,
                tampered,
                REPLICA.verify_key_bytes,
                object,
            )
        for bit in range(len(signed.signature) * 8):
            tampered = messages.Signed(signed.body, flip_bit(signed.signature, bit))
            self.assertRaises(
                BadSignature,
                verifier.verify,
                tampered,
                REPLICA.verify_key_bytes,
                object,
            )

    def test_seal_and_open(self) -> None:
        """A sealed control message opens with the signer's key only."""
        inner = messages.WedgeRequest(configuration=3)
        sealed = crypto.seal(
            REPLICA, "127.0.0.1:9000", "olympus", inner,
            recipient=OTHER.verify_key_bytes, epoch=EPOCH, configuration=3,
        )
        self.assertEqual(
            (sealed.sender, sealed.signer, sealed.recipient, sealed.epoch, sealed.configuration),
            ("127.0.0.1:9000", "olympus", OTHER.verify_key_bytes, EPOCH, 3),
        )
        self.assertEqual(sealed.body, codec.encode(inner))
        verifier = Verifier()
        self.assertEqual(verifier.open_sealed(sealed, REPLICA.verify_key_bytes), inner)
        self.assertRaises(
            BadSignature, verifier.open_sealed, sealed, OTHER.verify_key_bytes
        )
        self.assertRaises(
            BadSignature,
            verifier.open_sealed,
            crypto.corrupt(sealed),
            REPLICA.verify_key_bytes,
        )

    def test_seal_refuses_wire_messages(self) -> None:
        """Only SEALED_MESSAGES can be sealed."""
        self.assertRaises(
            ValueError, crypto.seal, REPLICA, "a", "replica", ORDER,
            OTHER.verify_key_bytes, EPOCH,
        )

    def test_open_sealed_refuses_other_bodies(self) -> None:
        """A genuinely signed statement smuggled into a Sealed is a BadMessage."""
        signed = crypto.sign(REPLICA, ORDER)
        sealed = messages.Sealed(
            "a", "replica", OTHER.verify_key_bytes, EPOCH, -1, signed.body, b""
        )
        # Signed as seal() signs (the whole envelope), so only the body is wrong.
        sealed = attrs.evolve(
            sealed, signature=REPLICA.sign_bytes(crypto.sealed_signing_bytes(sealed))
        )
        self.assertRaises(
            BadMessage, Verifier().open_sealed, sealed, REPLICA.verify_key_bytes
        )

    def test_open_sealed_refuses_a_statement_signature(self) -> None:
        """
        A statement's genuine signature over its body does not open a Sealed
        carrying that body: the seal signs the envelope, not the body alone.
        """
        signed = crypto.sign(REPLICA, messages.Shutdown(1))
        sealed = messages.Sealed(
            "a", "replica", OTHER.verify_key_bytes, EPOCH, -1, signed.body, signed.signature
        )
        self.assertRaises(
            BadSignature, Verifier().open_sealed, sealed, REPLICA.verify_key_bytes
        )

    def test_seal_signs_the_whole_envelope(self) -> None:
        """
        The signature is over the envelope with an empty signature field, so
        no field (recipient, epoch, configuration, sender, signer, body) can
        be changed without breaking it: a sealed message cannot be readdressed
        or replayed into another Olympus boot.
        """
        inner = messages.Shutdown(2)
        sealed = crypto.seal(
            REPLICA, "here", "replica 2.0", inner,
            recipient=OTHER.verify_key_bytes, epoch=EPOCH, configuration=2,
        )
        signing = crypto.sealed_signing_bytes(sealed)
        self.assertEqual(signing, codec.encode(attrs.evolve(sealed, signature=b"")))
        verify_key = REPLICA.signing_key.verify_key
        verify_key.verify(signing, sealed.signature)
        self.assertRaises(
            nacl.exceptions.BadSignatureError, verify_key.verify, sealed.body, sealed.signature
        )
        verifier = Verifier()
        self.assertEqual(verifier.open_sealed(sealed, REPLICA.verify_key_bytes), inner)
        for changes in (
            {"recipient": REPLICA.verify_key_bytes},
            {"epoch": b"f" * 16},
            {"epoch": b""},
            {"configuration": 3},
            {"configuration": -1},
            {"sender": "elsewhere"},
            {"signer": "olympus"},
            {"body": codec.encode(messages.Shutdown(3))},
        ):
            tampered = attrs.evolve(sealed, **changes)
            self.assertRaises(
                BadSignature, verifier.open_sealed, tampered, REPLICA.verify_key_bytes
            )
        # The genuine envelope still opens after the forgeries were refused.
        self.assertEqual(verifier.open_sealed(sealed, REPLICA.verify_key_bytes), inner)


class VerifierCacheTests(SynchronousTestCase):
    """The verifier runs Ed25519 once per (body, signature, key) and remembers."""

    def test_positive_cached(self) -> None:
        """A second verification returns the same object without checking again."""
        verifier = Verifier()
        signed = crypto.sign(REPLICA, ORDER)
        first = verifier.verify(
            signed, REPLICA.verify_key_bytes, messages.OrderStatement
        )
        copy = messages.Signed(
            bytes(bytearray(signed.body)), bytes(bytearray(signed.signature))
        )
        second = verifier.verify(
            copy, REPLICA.verify_key_bytes, messages.OrderStatement
        )
        self.assertIs(first, second)
        self.assertEqual(verifier.signature_checks, 1)

    def test_sealed_never_cached(self) -> None:
        """
        Sealed envelopes are checked every time and never remembered: a
        stranger sealing with a key of its own (which is what Olympus checks
        a sealed message against) must not fill the cache.
        """
        verifier = crypto.Verifier()
        for n in range(100):
            stranger = crypto.KeyPair.generate()
            sealed = crypto.seal(
                stranger, f"x{n}", "client 7", messages.GetConfiguration(7),
                recipient=b"r" * 32, epoch=b"",
            )
            verifier.open_sealed(sealed, stranger.verify_key_bytes)
            verifier.open_sealed(sealed, stranger.verify_key_bytes)
        self.assertEqual(verifier.cached_verdicts, 0)
        self.assertEqual(verifier.signature_checks, 200)

    def test_negative_not_cached(self) -> None:
        """
        A bad signature is checked again every time and leaves nothing behind:
        remembering rejections would let anyone fill our memory with garbage.
        """
        verifier = Verifier()
        bad = crypto.corrupt(crypto.sign(REPLICA, ORDER))
        for _ in range(3):
            self.assertRaises(
                BadSignature,
                verifier.verify,
                bad,
                REPLICA.verify_key_bytes,
                messages.OrderStatement,
            )
        self.assertEqual(verifier.signature_checks, 3)
        self.assertEqual(verifier.cached_verdicts, 0)

    def test_big_garbage_not_remembered(self) -> None:
        """Large bodies with bad signatures (the Olympus memory attack) are not kept."""
        verifier = Verifier()
        signature = REPLICA.sign_bytes(b"something else")
        for n in range(20):
            garbage = messages.Signed(bytes([n]) * (256 * 1024), signature)
            self.assertRaises(
                BadSignature,
                verifier.verify,
                garbage,
                REPLICA.verify_key_bytes,
                object,
            )
        self.assertEqual(verifier.cached_verdicts, 0)
        self.assertEqual(verifier.signature_checks, 20)

    def test_undecodable_not_cached(self) -> None:
        """A genuinely signed body that is not a message is refused each time, uncached."""
        verifier = Verifier()
        body = b"\xfe junk"
        signed = messages.Signed(body, REPLICA.sign_bytes(body))
        for _ in range(2):
            self.assertRaises(
                BadMessage, verifier.verify, signed, REPLICA.verify_key_bytes, object
            )
        self.assertEqual(verifier.signature_checks, 2)
        self.assertEqual(verifier.cached_verdicts, 0)

    def test_big_valid_body_not_cached(self) -> None:
        """A valid statement above MAX_CACHED_BODY is verified every time."""
        verifier = Verifier()
        big = messages.OrderStatement(
            0, 4, 1, 2, messages.Operation("put", ("k", "v" * Verifier.MAX_CACHED_BODY))
        )
        signed = crypto.sign(REPLICA, big)
        self.assertGreater(len(signed.body), Verifier.MAX_CACHED_BODY)
        for _ in range(2):
            self.assertEqual(
                verifier.verify(signed, REPLICA.verify_key_bytes, messages.OrderStatement),
                big,
            )
        self.assertEqual(verifier.signature_checks, 2)
        self.assertEqual(verifier.cached_verdicts, 0)

    def test_body_at_bound_cached(self) -> None:
        """A body of exactly MAX_CACHED_BODY bytes is still remembered."""

        def statement(value: str) -> messages.OrderStatement:
            return messages.OrderStatement(
                0, 4, 1, 2, messages.Operation("put", ("k", value))
            )

        base = len(codec.encode(statement("")))
        exact = statement("v" * (Verifier.MAX_CACHED_BODY - base))
        signed = crypto.sign(REPLICA, exact)
        self.assertEqual(len(signed.body), Verifier.MAX_CACHED_BODY)
        verifier = Verifier()
        verifier.verify(signed, REPLICA.verify_key_bytes, messages.OrderStatement)
        verifier.verify(signed, REPLICA.verify_key_bytes, messages.OrderStatement)
        self.assertEqual(verifier.signature_checks, 1)
        self.assertEqual(verifier.cached_verdicts, 1)

    def test_trust_own_respects_bound(self) -> None:
        """trust_own does not remember a statement too big to cache."""
        verifier = Verifier()
        big = messages.OrderStatement(
            0, 4, 1, 2, messages.Operation("put", ("k", "v" * Verifier.MAX_CACHED_BODY))
        )
        signed = crypto.sign(REPLICA, big)
        verifier.trust_own(signed, REPLICA.verify_key_bytes, big)
        self.assertEqual(verifier.cached_verdicts, 0)
        verifier.verify(signed, REPLICA.verify_key_bytes, messages.OrderStatement)
        self.assertEqual(verifier.signature_checks, 1)

    def test_never_exceeds_max_entries(self) -> None:
        """However verdicts arrive, the cache holds at most max_entries of them."""
        verifier = Verifier(max_entries=3)
        key = REPLICA.verify_key_bytes
        for n in range(10):
            signed = crypto.sign(REPLICA, messages.Shutdown(n))
            verifier.verify(signed, key, messages.Shutdown)
            self.assertLessEqual(verifier.cached_verdicts, 3)
            own = crypto.sign(REPLICA, messages.Shutdown(100 + n))
            verifier.trust_own(own, key, messages.Shutdown(100 + n))
            self.assertLessEqual(verifier.cached_verdicts, 3)
            self.assertRaises(
                BadSignature, verifier.verify, crypto.corrupt(signed), key, object
            )
            self.assertLessEqual(verifier.cached_verdicts, 3)
        self.assertEqual(verifier.cached_verdicts, 3)

    def test_forged_body_does_not_poison(self) -> None:
        """A real signature on a forged body neither passes nor spoils the original."""
        verifier = Verifier()
        signed = crypto.sign(REPLICA, ORDER)
        forged_statement = messages.OrderStatement(
            0, 4, 1, 2, messages.Operation("put", ("x", "y"))
        )
        forged = messages.Signed(codec.encode(forged_statement), signed.signature)
        self.assertRaises(
            BadSignature,
            verifier.verify,
            forged,
            REPLICA.verify_key_bytes,
            messages.OrderStatement,
        )
        self.assertEqual(
            verifier.verify(signed, REPLICA.verify_key_bytes, messages.OrderStatement),
            ORDER,
        )
        self.assertRaises(
            BadSignature,
            verifier.verify,
            forged,
            REPLICA.verify_key_bytes,
            messages.OrderStatement,
        )

    def test_type_checked_on_hits(self) -> None:
        """A cached statement is still refused when the caller expects another class."""
        verifier = Verifier()
        signed = crypto.sign(REPLICA, ORDER)
        verifier.verify(signed, REPLICA.verify_key_bytes, messages.OrderStatement)
        self.assertRaises(
            BadMessage,
            verifier.verify,
            signed,
            REPLICA.verify_key_bytes,
            messages.ResultStatement,
        )

    def test_trust_own(self) -> None:
        """A statement this process signed itself is accepted without an Ed25519 check."""
        verifier = Verifier()
        signed = crypto.sign(REPLICA, ORDER)
        verifier.trust_own(signed, REPLICA.verify_key_bytes, ORDER)
        self.assertEqual(
            verifier.verify(signed, REPLICA.verify_key_bytes, messages.OrderStatement),
            ORDER,
        )
        self.assertEqual(verifier.signature_checks, 0)
        # Trust covers exactly those bytes under that key, nothing else.
        self.assertRaises(
            BadSignature,
            verifier.verify,
            signed,
            OTHER.verify_key_bytes,
            messages.OrderStatement,
        )

    def test_bounded(self) -> None:
        """The cache forgets the least recently used verdict beyond its size."""
        verifier = Verifier(max_entries=2)
        statements = [crypto.sign(REPLICA, messages.Shutdown(n)) for n in range(3)]
        key = REPLICA.verify_key_bytes
        verifier.verify(statements[0], key, messages.Shutdown)
        verifier.verify(statements[1], key, messages.Shutdown)
        verifier.verify(statements[0], key, messages.Shutdown)  # now most recent
        verifier.verify(statements[2], key, messages.Shutdown)  # evicts 1
        self.assertEqual(verifier.signature_checks, 3)
        verifier.verify(statements[0], key, messages.Shutdown)
        self.assertEqual(verifier.signature_checks, 3)
        verifier.verify(statements[1], key, messages.Shutdown)
        self.assertEqual(verifier.signature_checks, 4)


class CorruptTests(SynchronousTestCase):
    """corrupt() spoils a signature exactly as SPEC §2.4 says."""

    def test_first_byte_plus_one(self) -> None:
        """The first signature byte goes up by one, the rest is unchanged."""
        signed = crypto.sign(REPLICA, ORDER)
        spoiled = crypto.corrupt(signed)
        self.assertEqual(spoiled.body, signed.body)
        self.assertEqual(spoiled.signature[0], (signed.signature[0] + 1) % 256)
        self.assertEqual(spoiled.signature[1:], signed.signature[1:])
        self.assertRaises(
            BadSignature,
            Verifier().verify,
            spoiled,
            REPLICA.verify_key_bytes,
            messages.OrderStatement,
        )

    def test_wraps_around(self) -> None:
        """A first byte of 255 becomes 0."""
        signed = messages.Signed(b"x", b"\xff" + b"\x07" * 63)
        self.assertEqual(crypto.corrupt(signed).signature, b"\x00" + b"\x07" * 63)

    def test_sealed(self) -> None:
        """Sealed envelopes are corrupted the same way and keep their other fields."""
        sealed = crypto.seal(
            REPLICA, "here", "replica", messages.Shutdown(1),
            recipient=OTHER.verify_key_bytes, epoch=EPOCH, configuration=1,
        )
        spoiled = crypto.corrupt(sealed)
        self.assertEqual(attrs.evolve(spoiled, signature=sealed.signature), sealed)
        self.assertNotEqual(spoiled.signature, sealed.signature)
        self.assertRaises(
            BadSignature, Verifier().open_sealed, spoiled, REPLICA.verify_key_bytes
        )


class WorkedExampleTests(SynchronousTestCase):
    """The worked example of docs/PROTOCOL.md §7 is what the code produces."""

    FRAME_HEX = (
        "0000007814030000002e02000000000000000000000000000000030100000003707574"
        "00000002000000056d6f7669650000000473746172000000408d234c10bad61563b79e"
        "f231d9bfdfa8045a535bed06591637b2a6e0bf18dd8f95917a7d27420b1bcf7cdcdd2f"
        "1f50924834a5f90a3d6dacbe0593e1d013aa09"
    )

    def test_client_request_frame(self) -> None:
        """A fixed-seed key signs the documented request into the documented frame."""
        key = KeyPair.from_seed(bytes(range(32)))
        self.assertEqual(
            key.verify_key_bytes.hex(),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
        )
        request = messages.Request(0, 3, messages.Operation("put", ("movie", "star")))
        body = codec.encode(messages.ClientRequest(crypto.sign(key, request)))
        self.assertEqual((len(body).to_bytes(4, "big") + body).hex(), self.FRAME_HEX)


class HashTests(SynchronousTestCase):
    """Result and state hashes are raw SHA-256 of the documented bytes."""

    def test_result_hash(self) -> None:
        """result_hash is SHA-256 of the UTF-8 result, as hashlib and nacl agree."""
        for result in ("", "OK", "fail", "star wars ✨"):
            raw = result.encode("utf-8")
            self.assertEqual(crypto.result_hash(result), hashlib.sha256(raw).digest())
            self.assertEqual(
                crypto.result_hash(result).hex().encode("ascii"),
                nacl.hash.sha256(raw, encoder=nacl.encoding.HexEncoder),
            )

    def test_state_hash(self) -> None:
        """state_hash is SHA-256 of compact, sorted, non-ASCII-escaped JSON."""
        state = {"movie": "star wars", "jedi": "luke ✨"}
        canonical = '{"jedi":"luke ✨","movie":"star wars"}'.encode()
        self.assertEqual(crypto.state_hash(state), hashlib.sha256(canonical).digest())
        self.assertEqual(crypto.state_hash({}), hashlib.sha256(b"{}").digest())
        self.assertEqual(
            crypto.state_hash({"movie": "star wars", "jedi": "luke"}).hex(),
            "1130b0d7e8f9e3bcf3c444952dd7f61f07bb4bf3cf5cc73e7592b95de1b6f052",
        )

    @given(st.dictionaries(st.text(), st.text()), st.randoms())
    def test_state_hash_ignores_order(
        self, state: dict[str, str], random: object
    ) -> None:
        """Any insertion order of the same dictionary hashes the same."""
        items = list(state.items())
        random.shuffle(items)  # type: ignore[attr-defined]
        self.assertEqual(crypto.state_hash(dict(items)), crypto.state_hash(state))
