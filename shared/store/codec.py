"""How values cross into MongoDB and back: the store's one NaN/inf cleaner.

hyperopt lets an objective return ``loss=nan`` or ``inf``, and its users read those back as
floats. nx-27017 rejects non-finite doubles, so every write encodes them as a one-key
marker document ``{"__nonfinite__": "nan"}``, and every read decodes the marker back to a
float through the collection's ``document_class``: callers (hyperopt's own ``refresh``
included) never see the marker. The same encoding is used on a real MongoDB, so a
database can move between the two. A marker sorts after every number, so a NaN loss is
never "best" in a server-side sort, and ``$lt``/``$gt`` filters skip it.
"""

from __future__ import annotations

import math
from typing import Any

from bson.codec_options import CodecOptions

MARKER = "__nonfinite__"
_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _float_name(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def encode(value: Any) -> Any:
    """A copy of ``value`` that any MongoDB stores: non-finite floats become markers,
    numpy scalars and arrays become plain Python, tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else {MARKER: _float_name(value)}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array
        return encode(value.tolist())
    return value


def _decode(value: Any) -> Any:
    if type(value) is StoredDoc and len(value) == 1 and MARKER in value:
        return _NAMES.get(dict.__getitem__(value, MARKER), value)
    if type(value) is list:
        return [_decode(v) for v in value]
    return value


class StoredDoc(dict):
    """A document read from the store; BSON decoding fills it through ``__setitem__``,
    children first, which is where markers turn back into floats."""

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, _decode(value))


CODEC = CodecOptions(document_class=StoredDoc, tz_aware=False)


def with_codec(handle: Any) -> Any:
    """The same pymongo Database or Collection, reading through :data:`CODEC`."""
    return handle.with_options(codec_options=CODEC)
