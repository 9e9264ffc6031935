"""Typed Envoy messages (``envoy-data-plane``) → the plain data we write as YAML.

betterproto2's ``to_dict`` gives canonical proto JSON. Three of its habits make a bootstrap harder to
read, so they are undone here, and only here: it leaves out fields at their zero value (so
``failure_mode_allow: false`` or ``op: EQ`` would vanish), it writes durations with three to nine decimals
(``0.050s``) and it writes 64-bit integers as strings (``"5"``). Envoy reads either form.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping
from typing import Any, cast

import betterproto2

with warnings.catch_warnings():
    # envoy-data-plane 2.2.0's generated validators use a form pydantic 2.12 deprecated (see router/envoyconf.py).
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.accesslog.v3 import ComparisonFilter
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import ExternalProcessor, ProcessingMode
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpConnectionManager
    from envoy_data_plane.google.protobuf import Any as AnyMessage

# Fields written even at their zero value, because a reader of the YAML should see the choice: fail
# closed, the comparison a local-reply mapper makes, the codec, and the whole processing mode
# (mode_override replaces all six fields at once; an unset one reads as NONE/DEFAULT).
SHOWN_AT_DEFAULT: Mapping[type[betterproto2.Message], frozenset[str]] = {
    ExternalProcessor: frozenset({"failure_mode_allow"}),
    ProcessingMode: frozenset(
        {
            "request_header_mode",
            "response_header_mode",
            "request_body_mode",
            "response_body_mode",
            "request_trailer_mode",
            "response_trailer_mode",
        }
    ),
    ComparisonFilter: frozenset({"op"}),
    HttpConnectionManager: frozenset({"codec_type"}),
}
_INT64 = frozenset(
    {
        betterproto2.TYPE_INT64,
        betterproto2.TYPE_UINT64,
        betterproto2.TYPE_SINT64,
        betterproto2.TYPE_FIXED64,
        betterproto2.TYPE_SFIXED64,
    }
)


def to_data(message: betterproto2.Message) -> dict[str, Any]:
    """The message as snake_case data for ``yaml.safe_dump`` (``Any`` fields carry their ``@type``)."""
    data = message.to_dict(casing=betterproto2.Casing.SNAKE)
    _restore(message, data)
    return data


def duration(value: dt.timedelta) -> str:
    """Envoy's duration string in its shortest form: ``0.05s``, ``600s``."""
    seconds, micros = divmod(value // dt.timedelta(microseconds=1), 1_000_000)
    return f"{seconds}s" if not micros else f"{seconds}.{micros:06d}".rstrip("0") + "s"


def _restore(message: betterproto2.Message, data: dict[str, Any]) -> None:
    """Undo to_dict's three habits in ``data``, walking ``message`` beside it."""
    shown = SHOWN_AT_DEFAULT.get(type(message), frozenset())
    fields = cast(Any, message)._betterproto.meta_by_field_name  # betterproto2's field metadata (proto types)
    for name, meta in fields.items():
        value = getattr(message, name)
        if name not in data:
            if name in shown:
                data[name] = value.name if isinstance(value, betterproto2.Enum) else value
        elif meta.repeated:
            for item, out in zip(value, data[name], strict=True):
                _nested(item, out)
            if meta.proto_type in _INT64:
                data[name] = [int(x) for x in data[name]]
        elif meta.proto_type == betterproto2.TYPE_MAP:
            for key, item in value.items():
                _nested(item, data[name][key])
        elif isinstance(value, dt.timedelta):
            data[name] = duration(value)
        elif meta.proto_type in _INT64:
            data[name] = int(data[name])
        else:
            _nested(value, data[name])


def _nested(value: object, out: object) -> None:
    """Recurse into a nested message (``Any`` unpacked); scalars, wrappers and Struct are done already."""
    if not isinstance(out, dict):
        return
    if isinstance(value, AnyMessage):
        inner = value.unpack()
        if inner is not None:
            _restore(inner, out)
    elif isinstance(value, betterproto2.Message) and not type(value).__module__.startswith("envoy_data_plane.google."):
        _restore(value, out)
