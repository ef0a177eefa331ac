"""
Tests for L{twisted_bcr.codec}: canonical round trips of every message type
and strict rejection of everything else, with L{BadMessage} only.
"""

from __future__ import annotations

import struct
import types
import typing
from typing import Any, ClassVar, Union

import attrs
from attrs import frozen
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_bcr import codec, messages
from twisted_bcr.codec import BadMessage, Codec

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for any value the codec can encode as C{annotation}."""
    if annotation is int:
        return INT64
    if annotation is str:
        return st.text(max_size=12)
    if annotation is bytes:
        return st.binary(max_size=70)
    if annotation is bool:
        return st.booleans()
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        (present,) = [each for each in arguments if each is not type(None)]
        return st.none() | strategy_for(present)
    if origin is tuple:
        return st.lists(strategy_for(arguments[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(
            st.text(max_size=6), strategy_for(arguments[1]), max_size=4
        )
    attrs.resolve_types(annotation)
    return st.builds(
        annotation,
        **{field.name: strategy_for(field.type) for field in attrs.fields(annotation)},
    )


any_message = st.sampled_from(messages.ALL_TYPES).flatmap(strategy_for)


def sample_assignment() -> messages.Assignment:
    """An assignment that exercises every kind of field the messages use."""
    configuration = messages.Configuration(
        number=2,
        t=1,
        replicas=(messages.ReplicaInfo("127.0.0.1:9000", b"k" * 32),),
        clients=(messages.ClientInfo(0, "127.0.0.1:9100", b"c" * 32),),
        checkpt_interval=5,
        head_timeout_ms=-3,
        nonhead_timeout_ms=2**63 - 1,
    )
    return messages.Assignment(
        configuration=configuration,
        index=1,
        state={"movie": "star", "ä": "", "": "empty key"},
        first_slot=7,
        failures="crash() ✨",
        recovered=(
            messages.Sealed(
                sender="olympus:1",
                signer="olympus",
                recipient=b"c" * 32,
                epoch=b"e" * 16,
                configuration=2,
                body=b"voucher",
                signature=b"\x02" * 64,
            ),
        ),
    )


def sample_wedged() -> messages.Wedged:
    """A wedged message with a history entry and a present optional checkpoint."""
    signed = messages.Signed(b"request", b"\x02" * 64)
    return messages.Wedged(
        configuration=0,
        index=2,
        history=(messages.HistoryEntry(1, signed, (signed, signed)),),
        checkpoint=messages.CheckpointProof(0, 1, (signed,)),
    )


@frozen
class Flags:
    """A test-only class with the field kinds no protocol message uses yet."""

    TAG: ClassVar[int] = 200
    ready: bool
    counts: dict[str, int]
    maybe_ready: bool | None


@frozen
class Holder:
    """A test-only class nesting L{Flags}."""

    TAG: ClassVar[int] = 201
    flags: Flags
    more: tuple[Flags, ...]


TEST_CODEC = Codec([Flags, Holder])


@frozen
class Node:
    """A test-only class that contains itself, which no codec may accept."""

    TAG: ClassVar[int] = 210
    child: Node | None


class RoundTripTests(SynchronousTestCase):
    """Encoding then decoding gives back the same message, canonically."""

    def test_every_type(self) -> None:
        """Every class in ALL_TYPES survives encode and decode unchanged."""
        for cls in messages.ALL_TYPES:
            self.check_round_trips(cls)

    def check_round_trips(self, cls: type) -> None:
        """Examples of C{cls} survive encode and decode unchanged."""

        @settings(max_examples=30)
        @given(strategy_for(cls))
        def check(message: object) -> None:
            data = codec.encode(message)
            self.assertEqual(data[0], cls.TAG)  # type: ignore[attr-defined]
            self.assertEqual(codec.decode(data), message)
            self.assertEqual(codec.decode(data, cls), message)

        check()

    @given(any_message)
    def test_canonical(self, message: object) -> None:
        """Re-encoding a decoded message reproduces the exact same bytes."""
        data = codec.encode(message)
        self.assertEqual(codec.encode(codec.decode(data)), data)

    def test_wire_and_sealed(self) -> None:
        """decode_wire and decode_sealed_body accept exactly their own classes."""
        wire = messages.ErrorMessage(0, 1, 2, "immutable")
        sealed = messages.WedgeRequest(3)
        self.assertEqual(codec.decode_wire(codec.encode(wire)), wire)
        self.assertEqual(codec.decode_sealed_body(codec.encode(sealed)), sealed)
        self.assertRaises(BadMessage, codec.decode_wire, codec.encode(sealed))
        self.assertRaises(BadMessage, codec.decode_sealed_body, codec.encode(wire))
        statement = messages.CheckpointStatement(0, 5, b"h" * 32)
        self.assertRaises(BadMessage, codec.decode_wire, codec.encode(statement))

    def test_handshake_frames(self) -> None:
        """decode_handshake accepts only the handshake's frames, which no other decoder takes."""
        hello = messages.Hello(1, b"k" * 32, b"n" * 32)
        proof = messages.HandshakeProof(b"\x02" * 64)
        for frame in (hello, proof):
            data = codec.encode(frame)
            self.assertEqual(codec.decode_handshake(data), frame)
            self.assertRaises(BadMessage, codec.decode_wire, data)
            self.assertRaises(BadMessage, codec.decode_sealed_body, data)
        for other in (messages.WedgeRequest(3), messages.ErrorMessage(0, 1, 2, "immutable")):
            self.assertRaises(BadMessage, codec.decode_handshake, codec.encode(other))

    def test_sealed_envelope_layout(self) -> None:
        """
        A Sealed envelope carries, in this order, everything its signature
        covers: sender, signer, recipient, epoch, configuration, body; then
        the signature.
        """
        self.assertEqual(
            [f.name for f in attrs.fields(messages.Sealed)],
            ["sender", "signer", "recipient", "epoch", "configuration", "body", "signature"],
        )
        sealed = messages.Sealed("s", "olympus", b"r", b"e", -1, b"b", b"g")
        self.assertEqual(
            codec.encode(sealed).hex(),
            "28"
            + "00000001" + b"s".hex()
            + "00000007" + b"olympus".hex()
            + "00000001" + b"r".hex()
            + "00000001" + b"e".hex()
            + "ff" * 8
            + "00000001" + b"b".hex()
            + "00000001" + b"g".hex(),
        )

    def test_expected_tuple(self) -> None:
        """decode accepts a tuple of expected classes and refuses other classes."""
        data = codec.encode(messages.WedgeRequest(1))
        self.assertEqual(
            codec.decode(data, (messages.Shutdown, messages.WedgeRequest)),
            messages.WedgeRequest(1),
        )
        self.assertRaises(BadMessage, codec.decode, data, (messages.Shutdown,))
        self.assertRaises(BadMessage, codec.decode, data, messages.Shutdown)

    def test_dict_order_irrelevant(self) -> None:
        """Dictionaries encode the same whatever their insertion order."""
        first = messages.RunningState(0, 0, {"b": "1", "a": "2", "é": "3"})
        second = messages.RunningState(0, 0, {"é": "3", "a": "2", "b": "1"})
        self.assertEqual(codec.encode(first), codec.encode(second))

    def test_known_bytes(self) -> None:
        """The layout is exactly the documented one, byte for byte."""
        data = codec.encode(messages.Operation("get", ("k",)))
        self.assertEqual(
            data.hex(),
            "010000000367657400000001000000016b",
        )
        data = codec.encode(messages.Shutdown(-1))
        self.assertEqual(data.hex(), "36" + "ff" * 8)

    def test_test_only_kinds(self) -> None:
        """Bools, dicts with non-string values and optionals round-trip too."""
        holder = Holder(Flags(True, {"b": -1, "a": 2}, None), (Flags(False, {}, True),))
        data = TEST_CODEC.encode(holder)
        self.assertEqual(TEST_CODEC.decode(data), holder)


class EncodeRejectionTests(SynchronousTestCase):
    """Values that do not fit their declared types are sender bugs: ValueError."""

    def test_int_out_of_range(self) -> None:
        """Ints outside signed 64-bit range are refused."""
        self.assertRaises(ValueError, codec.encode, messages.Shutdown(2**63))
        self.assertRaises(ValueError, codec.encode, messages.Shutdown(-(2**63) - 1))

    def test_wrong_field_types(self) -> None:
        """A str where bytes belong, or a wrong nested class, is refused."""
        self.assertRaises(ValueError, codec.encode, messages.Signed("text", b""))  # type: ignore[arg-type]
        self.assertRaises(
            ValueError,
            codec.encode,
            messages.Request(1, 2, messages.Shutdown(0)),  # type: ignore[arg-type]
        )
        self.assertRaises(ValueError, codec.encode, messages.Shutdown("1"))  # type: ignore[arg-type]

    def test_lone_surrogate(self) -> None:
        """A str that is not valid Unicode text cannot be encoded."""
        self.assertRaises(ValueError, codec.encode, messages.FinishRun("\ud800"))

    def test_not_a_message(self) -> None:
        """Objects outside the schema are refused."""
        self.assertRaises(ValueError, codec.encode, object())
        self.assertRaises(ValueError, codec.encode, (1, 2))

    def test_bad_bool(self) -> None:
        """Only True and False encode as bool."""
        self.assertRaises(ValueError, TEST_CODEC.encode, Flags(1, {}, None))  # type: ignore[arg-type]


class DecodeRejectionTests(SynchronousTestCase):
    """Anything but a canonical encoding raises BadMessage, and only that."""

    def assertBad(self, data: bytes, reason: str = "", decoder: Any = None) -> None:
        """C{data} is refused with a BadMessage whose text contains C{reason}."""
        decode = decoder if decoder is not None else codec.decode
        error = self.assertRaises(BadMessage, decode, data)
        self.assertIn(reason, str(error))

    def test_truncation_everywhere(self) -> None:
        """Every proper prefix of a message is refused."""
        for message in (sample_assignment(), sample_wedged()):
            data = codec.encode(message)
            for end in range(len(data)):
                self.assertBad(data[:end])

    def test_trailing_bytes(self) -> None:
        """Bytes after a complete message are refused."""
        data = codec.encode(sample_assignment())
        self.assertBad(data + b"\x00", "trailing")

    def test_unknown_tag(self) -> None:
        """Tags no class has are refused, at top level and nested."""
        self.assertBad(b"\x00", "unknown tag")
        self.assertBad(b"\xff" + b"\x00" * 16, "unknown tag")
        data = bytearray(
            codec.encode(messages.Request(1, 2, messages.Operation("get", ())))
        )
        data[17] = messages.Signed.TAG  # the nested Operation's tag
        self.assertBad(bytes(data), "wrong tag")

    def test_unexpected_type(self) -> None:
        """A valid message of the wrong class for the caller is refused."""
        data = codec.encode(messages.Shutdown(0))
        self.assertBad(
            data, "unexpected", lambda d: codec.decode(d, messages.FinishRun)
        )

    def test_unsorted_dict(self) -> None:
        """Dict keys out of UTF-8 byte order are refused."""
        data = codec.encode(messages.RunningState(0, 0, {"a": "1", "b": "2"}))
        swapped = data.replace(b"a", b"c", 1)
        self.assertBad(swapped, "unsorted")

    def test_duplicate_dict_keys(self) -> None:
        """A dict key given twice is refused."""
        data = codec.encode(messages.RunningState(0, 0, {"a": "1", "b": "2"}))
        self.assertBad(data.replace(b"b", b"a", 1), "duplicated")

    def test_huge_counts(self) -> None:
        """Counts and lengths beyond the remaining bytes are refused cheaply."""
        huge = struct.pack(">I", 0xFFFFFFFF)
        header = bytes([messages.Wedged.TAG]) + struct.pack(">qq", 0, 0)
        self.assertBad(header + huge, "count exceeds")
        running = bytes([messages.RunningState.TAG]) + struct.pack(">qq", 0, 0)
        self.assertBad(running + huge, "count exceeds")
        self.assertBad(bytes([messages.FinishRun.TAG]) + huge + b"abc", "truncated")
        self.assertBad(bytes([messages.Signed.TAG]) + huge, "truncated")

    def test_bad_utf8(self) -> None:
        """Invalid, overlong and surrogate UTF-8 sequences are refused."""
        for raw in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"a\x80"):
            data = bytes([messages.FinishRun.TAG]) + struct.pack(">I", len(raw)) + raw
            self.assertBad(data, "utf-8")

    def test_bad_bool(self) -> None:
        """A bool byte other than 0 or 1 is refused."""
        good = TEST_CODEC.encode(Flags(True, {}, None))
        self.assertEqual(good[1], 1)
        self.assertBad(good[:1] + b"\x02" + good[2:], "bool", TEST_CODEC.decode)

    def test_bad_optional_marker(self) -> None:
        """An optional marker other than 0 or 1 is refused."""
        good = codec.encode(messages.Wedged(0, 0, (), None))
        self.assertEqual(good[-1], 0)
        self.assertBad(good[:-1] + b"\x02", "optional")

    def test_not_bytes(self) -> None:
        """Non-bytes input is a BadMessage too; bytes-like input is accepted."""
        self.assertBad("text", "not bytes")  # type: ignore[arg-type]
        self.assertBad(None, "not bytes")  # type: ignore[arg-type]
        message = messages.Shutdown(4)
        self.assertEqual(codec.decode(memoryview(codec.encode(message))), message)
        self.assertEqual(codec.decode(bytearray(codec.encode(message))), message)

    def test_empty(self) -> None:
        """Zero bytes are refused."""
        self.assertBad(b"", "empty")

    @given(st.binary(max_size=200))
    def test_garbage(self, data: bytes) -> None:
        """Arbitrary bytes decode to a message or raise BadMessage, nothing else."""
        try:
            codec.decode(data)
        except BadMessage:
            pass

    @given(any_message, st.data())
    def test_mutations(self, message: object, data: st.DataObject) -> None:
        """Flipping, inserting or deleting bytes never escapes as another exception."""
        encoded = bytearray(codec.encode(message))
        position = data.draw(st.integers(0, len(encoded) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            encoded[position] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            encoded.insert(position, data.draw(st.integers(0, 255)))
        else:
            del encoded[position]
        try:
            decoded = codec.decode(bytes(encoded))
        except BadMessage:
            return
        # Whatever still decodes must be canonical.
        self.assertEqual(codec.encode(decoded), bytes(encoded))


class SchemaTests(SynchronousTestCase):
    """The codec refuses schemas it could not decode within bounded depth."""

    def test_recursive_type(self) -> None:
        """A class that contains itself is refused when the codec is built."""
        self.assertRaises(TypeError, Codec, [Node])

    def test_duplicate_tags(self) -> None:
        """Two classes with one tag are refused."""

        @frozen
        class Other:
            TAG: ClassVar[int] = Flags.TAG

        self.assertRaises(TypeError, Codec, [Flags, Other])

    def test_unsupported_field(self) -> None:
        """A field type outside the rules is refused."""

        @frozen
        class Floaty:
            TAG: ClassVar[int] = 211
            value: float

        self.assertRaises(TypeError, Codec, [Floaty])

    def test_keyword_only_field(self) -> None:
        """Fields that cannot be passed positionally are refused."""

        @frozen(kw_only=True)
        class Named:
            TAG: ClassVar[int] = 212
            value: int

        self.assertRaises(TypeError, Codec, [Named])

    def test_messages_within_depth(self) -> None:
        """Every message type fits the depth limit (the codec built at import)."""
        self.assertLessEqual(
            max(codec._MESSAGES._by_class[cls].depth for cls in messages.ALL_TYPES),
            codec.MAX_DEPTH,
        )
