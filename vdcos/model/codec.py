"""One encoding for every value stored in etcd: dataclass -> plain dict, Enum -> value,
tuples -> lists. Decoding is driven by the dataclass annotations."""
from __future__ import annotations

import dataclasses
import enum
import operator
import typing
from typing import Any, Callable, TypeVar

import orjson

from vdcos.model.compute import AllocEntry, Allocation, QosSettings
from vdcos.model.resources import Resources

T = TypeVar("T")
Codec = Callable[[Any], Any]


def _identity(v: Any) -> Any:
    return v


def encode(obj: Any) -> Any:
    """Any value -> plain JSON data (for values whose type is only known at run time)."""
    if obj is None or isinstance(obj, (str, int, float)) and not isinstance(obj, enum.Enum):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _encoder(type(obj))(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [encode(v) for v in obj]
    return obj


_ENCODERS: dict[Any, Codec] = {}
_DECODERS: dict[Any, Codec] = {}


def _encoder(tp: Any) -> Codec:
    """The encoder of a declared type, built once from the annotations: a record is encoded
    by a handful of closures instead of an isinstance walk of every value."""
    got = _ENCODERS.get(tp)
    if got is not None:
        return got
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _ENCODERS[tp] = encode  # a self-referencing type meets the generic walk
        hints = typing.get_type_hints(tp)
        fields = tuple((f.name, _encoder(hints[f.name])) for f in dataclasses.fields(tp))
        plain = tuple(n for n, e in fields if e is _identity)
        other = tuple((n, e) for n, e in fields if e is not _identity)
        # A nested record left at its default value (a VM's HA settings, a node's zero usage) is
        # not written: decoding gives the default back, and every VM's spec is stored twice.
        defaults = {f.name: f.default for f in dataclasses.fields(tp) if dataclasses.is_dataclass(f.default)}

        def record(obj: Any) -> Any:
            out = {n: getattr(obj, n) for n in plain}
            for n, e in other:
                v = getattr(obj, n)
                if n not in defaults or v != defaults[n]:
                    out[n] = e(v)
            return out
        got = record
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        got = operator.attrgetter("value")
    elif tp in (str, int, float, bool):
        got = _identity
    elif typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _encoder(args[0])
            got = (lambda v: list(v)) if item is _identity else (lambda v: [item(x) for x in v])
        else:
            items = tuple(_encoder(a) for a in args)
            got = lambda v: [e(x) for e, x in zip(items, v)]  # noqa: E731
    else:
        got = encode
    _ENCODERS[tp] = got
    return got


# orjson: a tenth of the json module's time for the records every placement writes. Compact,
# keys sorted, UTF-8; anything json.loads reads.
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _json(data: Any) -> bytes:
    return orjson.dumps(data, option=_JSON_OPTIONS)


def dumps(obj: object) -> bytes:
    """The bytes stored in etcd for a value."""
    if type(obj) is Allocation:
        return _allocation_bytes(obj)
    return _json(_encoder(type(obj))(obj))


# A node's allocation record is written whole each time one VM joins or leaves it, and its
# other entries are the same as last time: each entry's JSON is kept (bounded) and joined,
# not encoded again, which made encoding grow with the entries (5 us each). Same bytes as the
# generic encoder: a test compares them.
_ENTRY_JSON: dict[AllocEntry, bytes] = {}
_ENTRY_JSON_MAX = 1 << 16


def _allocation_bytes(a: Allocation) -> bytes:
    parts = []
    for e in a.entries:
        got = _ENTRY_JSON.get(e)
        if got is None:
            if len(_ENTRY_JSON) >= _ENTRY_JSON_MAX:
                _ENTRY_JSON.clear()
            got = _ENTRY_JSON[e] = _json(_encoder(AllocEntry)(e))
        parts.append(got)
    return b'{"entries":[%b],"node":%b}' % (b",".join(parts), _json(a.node))


def assignment_bytes(spec: bytes, qos: QosSettings, reserved: Resources, epoch: int = 1, request_id: str = "") -> bytes:
    """dumps(Assignment(...)) around `spec`'s bytes, which a placement has just encoded for the
    VM's spec record (the generic encoder would encode the spec again)."""
    return b'{"epoch":%d,"qos":%b,"request_id":%b,"reserved":%b,"spec":%b}' % (
        epoch, dumps(qos), orjson.dumps(request_id), dumps(reserved), spec)


def decode(cls: type[T], data: Any) -> T:
    return typing.cast(T, _decoder(cls)(data))


def _decoder(tp: Any) -> Codec:
    """The decoder of a declared type, built once from the annotations (see `_encoder`)."""
    got = _DECODERS.get(tp)
    if got is not None:
        return got
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _DECODERS[tp] = lambda data: decode(tp, data)  # a self-referencing type: resolved late
        hints = typing.get_type_hints(tp)
        fields = {n: _decoder(h) for n, h in hints.items()}

        def record(data: Any) -> Any:
            return tp(**{k: fields[k](v) for k, v in data.items() if k in fields})
        got = record
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        got = tp
    elif typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            got = (lambda v: tuple(v)) if item is _identity else (lambda v: tuple(item(x) for x in v))
        else:
            items = tuple(_decoder(a) for a in args)
            got = lambda v: tuple(d(x) for d, x in zip(items, v))  # noqa: E731
    elif tp is float:
        got = float
    elif tp is int:
        got = int
    else:  # str, bool, unions: as stored
        got = _identity
    _DECODERS[tp] = got
    return got
