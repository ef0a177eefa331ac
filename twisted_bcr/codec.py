# -*- test-case-name: tests.test_codec -*-
"""
The one canonical binary encoding of every message: on the wire and as the
exact bytes that get signed.

The encoding is driven by the resolved field annotations of the frozen attrs
classes in L{twisted_bcr.messages}.  At import every class is compiled once
into an encoder and a decoder closure, so encoding or decoding a message does
no introspection at all.  The rules (docs/PROTOCOL.md has them byte by byte):

  - object: C{TAG} (u8), then its fields in declaration order; nested objects
    carry their tag too, and it is checked against the declared field type;
  - C{int}: signed 64-bit big-endian;
  - C{str}: u32 big-endian byte length, then strict UTF-8;
  - C{bytes}: u32 length, then the raw bytes;
  - C{bool}: one byte, 0 or 1;
  - C{Optional[X]}: u8 0 (absent), or u8 1 followed by X;
  - C{tuple[X, ...]}: u32 item count, then the items;
  - C{dict[str, V]}: u32 pair count, then (key, value) pairs in strictly
    increasing order of the keys' UTF-8 bytes.

Every value has exactly one encoding and the decoder refuses anything else
(unsorted or duplicate keys, bool bytes other than 0/1, trailing bytes), so
C{encode(decode(b)) == b} whenever C{decode(b)} succeeds.  Decoding hostile
input raises L{BadMessage} and nothing else.

Nesting depth is bounded by the schema itself: decoding is type-driven and no
message type contains itself.  L{Codec} refuses recursive types and schemas
deeper than L{MAX_DEPTH} when it compiles them, so no input can drive the
decoder deeper at run time and no run-time depth counter is needed.
"""

from __future__ import annotations

import operator
import struct
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Union

import attrs

from twisted_bcr import messages

__all__ = [
    "MAX_DEPTH",
    "BadMessage",
    "Codec",
    "decode",
    "decode_handshake",
    "decode_sealed_body",
    "decode_wire",
    "encode",
]

#: The deepest nesting of objects and containers a schema may have.
MAX_DEPTH = 16


class BadMessage(ValueError):
    """Bytes that are not the canonical encoding of an expected message."""


_Put = Callable[[bytes], None]
_ValueEncoder = Callable[[Any, _Put], None]
_ValueDecoder = Callable[[bytes, int], tuple[Any, int]]
_Expected = type | tuple[type, ...] | None

_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_unpack_u32 = _U32.unpack_from
_pack_u32 = _U32.pack

_ABSENT = b"\x00"
_PRESENT = b"\x01"
_FALSE = b"\x00"
_TRUE = b"\x01"


class _Compiled:
    """The compiled encoder, decoder and size facts of one annotated type."""

    __slots__ = ("encode", "decode", "min_size", "depth", "is_int")

    def __init__(
        self,
        encode: _ValueEncoder,
        decode: _ValueDecoder,
        min_size: int,
        depth: int,
        is_int: bool = False,
    ) -> None:
        self.encode = encode
        self.decode = decode
        #: The fewest bytes any value of this type encodes to; bounds counts.
        self.min_size = min_size
        #: Levels of objects and containers, this one included.
        self.depth = depth
        #: Adjacent ints of an object are packed by one struct call.
        self.is_int = is_int


# ---------------------------------------------------------------------------
# Scalars


def _encode_int(value: int, put: _Put) -> None:
    put(_I64.pack(value))


def _decode_int(data: bytes, pos: int) -> tuple[int, int]:
    return _I64.unpack_from(data, pos)[0], pos + 8


def _encode_str(value: str, put: _Put) -> None:
    raw = value.encode("utf-8")
    put(_pack_u32(len(raw)) + raw)


def _decode_str(data: bytes, pos: int) -> tuple[str, int]:
    (length,) = _unpack_u32(data, pos)
    start = pos + 4
    end = start + length
    if end > len(data):
        raise BadMessage("truncated")
    # Strict UTF-8 (no surrogates, no overlong forms); a UnicodeDecodeError
    # becomes BadMessage in the top-level decoder.
    return data[start:end].decode("utf-8"), end


def _encode_bytes(value: bytes, put: _Put) -> None:
    put(_pack_u32(len(value)) + value)


def _decode_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    (length,) = _unpack_u32(data, pos)
    start = pos + 4
    end = start + length
    if end > len(data):
        raise BadMessage("truncated")
    return data[start:end], end


def _encode_bool(value: bool, put: _Put) -> None:
    if value is True:
        put(_TRUE)
    elif value is False:
        put(_FALSE)
    else:
        raise TypeError(f"expected a bool, got {type(value).__name__}")


def _decode_bool(data: bytes, pos: int) -> tuple[bool, int]:
    byte = data[pos]
    if byte > 1:
        raise BadMessage("bad bool")
    return byte == 1, pos + 1


_INT = _Compiled(_encode_int, _decode_int, 8, 0, is_int=True)
_SCALARS: dict[object, _Compiled] = {
    int: _INT,
    str: _Compiled(_encode_str, _decode_str, 4, 0),
    bytes: _Compiled(_encode_bytes, _decode_bytes, 4, 0),
    bool: _Compiled(_encode_bool, _decode_bool, 1, 0),
}


# ---------------------------------------------------------------------------
# Containers


def _compile_optional(inner: _Compiled) -> _Compiled:
    encode_inner = inner.encode
    decode_inner = inner.decode

    def encode_optional(value: Any, put: _Put) -> None:
        if value is None:
            put(_ABSENT)
        else:
            put(_PRESENT)
            encode_inner(value, put)

    def decode_optional(data: bytes, pos: int) -> tuple[Any, int]:
        marker = data[pos]
        if marker == 0:
            return None, pos + 1
        if marker != 1:
            raise BadMessage("bad optional marker")
        return decode_inner(data, pos + 1)

    return _Compiled(encode_optional, decode_optional, 1, inner.depth + 1)


def _compile_tuple(item: _Compiled) -> _Compiled:
    encode_item = item.encode
    decode_item = item.decode
    min_item_size = item.min_size

    def encode_tuple(value: Collection[Any], put: _Put) -> None:
        put(_pack_u32(len(value)))
        for each in value:
            encode_item(each, put)

    def decode_tuple(data: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
        (count,) = _unpack_u32(data, pos)
        pos += 4
        # Refuse before allocating: a hostile count must not cost memory or time.
        if count * min_item_size > len(data) - pos:
            raise BadMessage("count exceeds remaining bytes")
        items: list[Any] = []
        append = items.append
        for _ in range(count):
            each, pos = decode_item(data, pos)
            append(each)
        return tuple(items), pos

    return _Compiled(encode_tuple, decode_tuple, 4, item.depth + 1)


def _compile_dict(value_type: _Compiled) -> _Compiled:
    encode_value = value_type.encode
    decode_value = value_type.decode
    min_pair_size = 4 + value_type.min_size

    def encode_dict(value: Mapping[str, Any], put: _Put) -> None:
        # Ordered by UTF-8 bytes, which is what the decoder checks.
        pairs = sorted((key.encode("utf-8"), item) for key, item in value.items())
        put(_pack_u32(len(pairs)))
        for raw_key, item in pairs:
            put(_pack_u32(len(raw_key)) + raw_key)
            encode_value(item, put)

    def decode_dict(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        (count,) = _unpack_u32(data, pos)
        pos += 4
        if count * min_pair_size > len(data) - pos:
            raise BadMessage("count exceeds remaining bytes")
        result: dict[str, Any] = {}
        previous_key = b""
        for index in range(count):
            (length,) = _unpack_u32(data, pos)
            start = pos + 4
            pos = start + length
            if pos > len(data):
                raise BadMessage("truncated")
            raw_key = data[start:pos]
            if index and raw_key <= previous_key:
                raise BadMessage("dict keys unsorted or duplicated")
            previous_key = raw_key
            result[raw_key.decode("utf-8")], pos = decode_value(data, pos)
        return result, pos

    return _Compiled(encode_dict, decode_dict, 4, value_type.depth + 1)


# ---------------------------------------------------------------------------
# Objects


def _compile_object(cls: type, fields: list[tuple[str, _Compiled]]) -> _Compiled:
    """
    Build the codec of one class from its compiled fields.

    Runs of adjacent C{int} fields are packed and unpacked with one C{struct}
    call, because most statements start with several of them.
    """
    tag: int = cls.TAG  # type: ignore[attr-defined]
    tag_byte = bytes([tag])
    # Each step is (getter, run struct or None, field encoder or None).
    encode_steps: list[
        tuple[Callable[[Any], Any], struct.Struct | None, _ValueEncoder | None]
    ] = []
    # Each step is (run struct or None, field decoder or None).
    decode_steps: list[tuple[struct.Struct | None, _ValueDecoder | None]] = []

    index = 0
    while index < len(fields):
        name, compiled = fields[index]
        if compiled.is_int:
            names = [name]
            while index + 1 < len(fields) and fields[index + 1][1].is_int:
                index += 1
                names.append(fields[index][0])
            run = struct.Struct(">" + "q" * len(names))
            encode_steps.append((_attrs_as_tuple(names), run, None))
            decode_steps.append((run, None))
        else:
            encode_steps.append((operator.attrgetter(name), None, compiled.encode))
            decode_steps.append((None, compiled.decode))
        index += 1

    frozen_encode_steps = tuple(
        (getter, run.pack if run is not None else None, encode_field)
        for getter, run, encode_field in encode_steps
    )
    frozen_decode_steps = tuple(decode_steps)
    name = cls.__name__

    def encode_object(value: Any, put: _Put) -> None:
        if type(value) is not cls:
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        put(tag_byte)
        for getter, pack, encode_field in frozen_encode_steps:
            if pack is not None:
                put(pack(*getter(value)))
            else:
                encode_field(getter(value), put)  # type: ignore[misc]

    def decode_object(data: bytes, pos: int) -> tuple[Any, int]:
        if data[pos] != tag:
            raise BadMessage(f"wrong tag {data[pos]} for {name}")
        pos += 1
        values: list[Any] = []
        for run, decode_field in frozen_decode_steps:
            if run is not None:
                values += run.unpack_from(data, pos)
                pos += run.size
            else:
                value, pos = decode_field(data, pos)  # type: ignore[misc]
                values.append(value)
        return cls(*values), pos

    min_size = 1 + sum(compiled.min_size for _, compiled in fields)
    depth = 1 + max((compiled.depth for _, compiled in fields), default=0)
    return _Compiled(encode_object, decode_object, min_size, depth)


def _attrs_as_tuple(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) == 1:
        # attrgetter with one name returns the bare value, not a 1-tuple.
        single = operator.attrgetter(names[0])
        return lambda value: (single(value),)
    return operator.attrgetter(*names)


# ---------------------------------------------------------------------------
# The codec of a set of classes


class Codec:
    """
    Encoder and decoder for a closed set of tagged attrs classes.

    The module-level functions use the instance built from
    L{messages.ALL_TYPES}; tests build others from their own classes.
    """

    def __init__(self, classes: Iterable[type]) -> None:
        self._classes = tuple(classes)
        self._by_class: dict[type, _Compiled] = {}
        self._compiling: set[type] = set()
        by_tag: dict[int, type] = {}
        for cls in self._classes:
            tag = getattr(cls, "TAG", None)
            if not isinstance(tag, int) or not 0 <= tag <= 255:
                raise TypeError(f"{cls.__name__} has no one-byte TAG")
            if tag in by_tag:
                raise TypeError(
                    f"{cls.__name__} reuses tag {tag} of {by_tag[tag].__name__}"
                )
            by_tag[tag] = cls
        self._by_tag = by_tag
        for cls in self._classes:
            self._compile_class(cls)
        self._encoders: dict[type, _ValueEncoder] = {
            cls: compiled.encode for cls, compiled in self._by_class.items()
        }
        self._decoders: dict[int, tuple[type, _ValueDecoder]] = {
            cls.TAG: (cls, self._by_class[cls].decode)  # type: ignore[attr-defined]
            for cls in self._classes
        }

    # -- compilation ------------------------------------------------------

    def _compile_class(self, cls: type) -> _Compiled:
        known = self._by_class.get(cls)
        if known is not None:
            return known
        if cls not in self._by_tag.values():
            raise TypeError(f"{cls.__name__} is not one of this codec's classes")
        if cls in self._compiling:
            raise TypeError(f"{cls.__name__} contains itself; depth would be unbounded")
        self._compiling.add(cls)
        try:
            attrs.resolve_types(cls)
            for field in attrs.fields(cls):
                # Decoded objects are built positionally, in declaration order.
                if not field.init or field.kw_only:
                    raise TypeError(
                        f"{cls.__name__}.{field.name} is not a positional init field"
                    )
            fields = [
                (field.name, self._compile_type(field.type))
                for field in attrs.fields(cls)
            ]
        finally:
            self._compiling.discard(cls)
        compiled = _compile_object(cls, fields)
        if compiled.depth > MAX_DEPTH:
            raise TypeError(
                f"{cls.__name__} nests {compiled.depth} deep (limit {MAX_DEPTH})"
            )
        self._by_class[cls] = compiled
        return compiled

    def _compile_type(self, annotation: Any) -> _Compiled:
        scalar = _SCALARS.get(annotation)
        if scalar is not None:
            return scalar
        origin = typing.get_origin(annotation)
        arguments = typing.get_args(annotation)
        if origin in (Union, types.UnionType):
            present = [each for each in arguments if each is not type(None)]
            if len(arguments) == 2 and len(present) == 1:
                return _compile_optional(self._compile_type(present[0]))
        elif origin is tuple:
            if len(arguments) == 2 and arguments[1] is Ellipsis:
                return _compile_tuple(self._compile_type(arguments[0]))
        elif origin is dict:
            if len(arguments) == 2 and arguments[0] is str:
                return _compile_dict(self._compile_type(arguments[1]))
        elif isinstance(annotation, type) and attrs.has(annotation):
            return self._compile_class(annotation)
        raise TypeError(f"the codec cannot encode fields of type {annotation!r}")

    # -- use --------------------------------------------------------------

    def encode(self, message: object) -> bytes:
        """
        The canonical bytes of C{message}.

        @raise ValueError: C{message} is not of one of this codec's classes,
            or a field does not fit its type (an int out of 64-bit range, a
            string that is not valid Unicode, a wrong type): a sender bug.
        """
        encoder = self._encoders.get(type(message))
        if encoder is None:
            raise ValueError(f"not a message: {type(message).__name__}")
        parts: list[bytes] = []
        try:
            encoder(message, parts.append)
        except (
            struct.error,
            TypeError,
            AttributeError,
            UnicodeError,
            OverflowError,
        ) as error:
            raise ValueError(
                f"cannot encode {type(message).__name__}: {error}"
            ) from error
        return b"".join(parts)

    def decode(
        self, data: bytes | bytearray | memoryview, expected: _Expected = None
    ) -> object:
        """
        The message C{data} encodes (bytes-like input is copied to bytes).

        @param expected: a class or tuple of classes the top-level message
            must be one of; L{None} accepts any of this codec's classes.
        @raise BadMessage: on any problem at all; no other exception escapes.
        """
        if expected is None:
            allowed: Collection[type] | None = None
        elif isinstance(expected, type):
            allowed = (expected,)
        else:
            allowed = expected
        return self._decode(data, allowed)

    def decoder_for(self, classes: Iterable[type]) -> Callable[[bytes], object]:
        """A decoder accepting only C{classes} at top level, checked by tag."""
        allowed = frozenset(classes)
        unknown = allowed - set(self._by_class)
        if unknown:
            raise TypeError(
                f"not this codec's classes: {sorted(c.__name__ for c in unknown)}"
            )

        def decode_only(data: bytes) -> object:
            return self._decode(data, allowed)

        return decode_only

    def _decode(
        self, data: bytes | bytearray | memoryview, allowed: Collection[type] | None
    ) -> object:
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise BadMessage(f"not bytes: {type(data).__name__}")
            data = bytes(data)
        if not data:
            raise BadMessage("empty")
        entry = self._decoders.get(data[0])
        if entry is None:
            raise BadMessage(f"unknown tag {data[0]}")
        cls, decoder = entry
        if allowed is not None and cls not in allowed:
            raise BadMessage(f"unexpected {cls.__name__}")
        try:
            message, end = decoder(data, 0)
        except BadMessage:
            raise
        except (struct.error, IndexError):
            raise BadMessage("truncated") from None
        except UnicodeDecodeError:
            raise BadMessage("bad utf-8") from None
        except Exception as error:
            # Whatever else hostile bytes provoke is still just a bad message.
            raise BadMessage(f"undecodable: {type(error).__name__}") from None
        if end != len(data):
            raise BadMessage(f"{len(data) - end} trailing bytes")
        return message


_MESSAGES = Codec(messages.ALL_TYPES)

#: C{encode(message) -> bytes}: the canonical bytes of any message class.
encode = _MESSAGES.encode
#: C{decode(data, expected=None) -> message}; raises L{BadMessage} only.
decode = _MESSAGES.decode
#: Decode a frame: only L{messages.WIRE_MESSAGES} are accepted at top level.
decode_wire = _MESSAGES.decoder_for(messages.WIRE_MESSAGES)
#: Decode a L{messages.Sealed} body: only L{messages.SEALED_MESSAGES}.
decode_sealed_body = _MESSAGES.decoder_for(messages.SEALED_MESSAGES)
#: Decode a handshake frame: only L{messages.HANDSHAKE_MESSAGES}.
decode_handshake = _MESSAGES.decoder_for(messages.HANDSHAKE_MESSAGES)
