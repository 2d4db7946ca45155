"""Prometheus' remote-read and remote-write protobuf messages, built from descriptors at start.

The messages are wire-compatible with the `prompb` package of Prometheus (Apache-2.0;
`prompb/types.proto` and `prompb/remote.proto`), limited to what remote-read with the SAMPLES
response type and remote-write 1.0 use. They are described here in Python rather than generated
by protoc, so no generated code has to match the installed protobuf runtime:

    message Sample       { double value = 1; int64 timestamp = 2; }
    message Label        { string name = 1; string value = 2; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    message LabelMatcher { enum Type { EQ = 0; NEQ = 1; RE = 2; NRE = 3; }
                           Type type = 1; string name = 2; string value = 3; }
    message ReadHints    { int64 step_ms = 1; string func = 2; int64 start_ms = 3;
                           int64 end_ms = 4; }
    message Query        { int64 start_timestamp_ms = 1; int64 end_timestamp_ms = 2;
                           repeated LabelMatcher matchers = 3; ReadHints hints = 4; }
    message ReadRequest  { repeated Query queries = 1;
                           enum ResponseType { SAMPLES = 0; STREAMED_XOR_CHUNKS = 1; }
                           repeated ResponseType accepted_response_types = 2; }
    message QueryResult  { repeated TimeSeries timeseries = 1; }
    message ReadResponse { repeated QueryResult results = 1; }
    message WriteRequest { repeated TimeSeries timeseries = 1; }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_SCALARS = {
    "double": _F.TYPE_DOUBLE,
    "int64": _F.TYPE_INT64,
    "string": _F.TYPE_STRING,
}

# message -> [(field name, number, type, repeated)]; a type not in _SCALARS names a message
# of this file, or an enum when it contains a dot (Message.Enum).
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "Sample": [("value", 1, "double", False), ("timestamp", 2, "int64", False)],
    "Label": [("name", 1, "string", False), ("value", 2, "string", False)],
    "TimeSeries": [("labels", 1, "Label", True), ("samples", 2, "Sample", True)],
    "LabelMatcher": [
        ("type", 1, "LabelMatcher.Type", False),
        ("name", 2, "string", False),
        ("value", 3, "string", False),
    ],
    "ReadHints": [
        ("step_ms", 1, "int64", False),
        ("func", 2, "string", False),
        ("start_ms", 3, "int64", False),
        ("end_ms", 4, "int64", False),
    ],
    "Query": [
        ("start_timestamp_ms", 1, "int64", False),
        ("end_timestamp_ms", 2, "int64", False),
        ("matchers", 3, "LabelMatcher", True),
        ("hints", 4, "ReadHints", False),
    ],
    "ReadRequest": [
        ("queries", 1, "Query", True),
        ("accepted_response_types", 2, "ReadRequest.ResponseType", True),
    ],
    "QueryResult": [("timeseries", 1, "TimeSeries", True)],
    "ReadResponse": [("results", 1, "QueryResult", True)],
    "WriteRequest": [("timeseries", 1, "TimeSeries", True)],
}
_ENUMS: dict[str, dict[str, list[tuple[str, int]]]] = {
    "LabelMatcher": {"Type": [("EQ", 0), ("NEQ", 1), ("RE", 2), ("NRE", 3)]},
    "ReadRequest": {"ResponseType": [("SAMPLES", 0), ("STREAMED_XOR_CHUNKS", 1)]},
}
_PACKAGE = "prometheus"
# A file name of our own, so that the pool never clashes with another copy of prompb.
_FILE = "prognos/prompb.proto"


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name=_FILE, package=_PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for enum_name, values in _ENUMS.get(name, {}).items():
            enum = message.enum_type.add(name=enum_name)
            for value_name, number in values:
                enum.value.add(name=value_name, number=number)
        for field_name, number, kind, repeated in fields:
            field = message.field.add(
                name=field_name, number=number, label=_REPEATED if repeated else _OPTIONAL
            )
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = _F.TYPE_ENUM if "." in kind else _F.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{kind}"
    return proto


def _classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _classes()
Sample: Any = _CLASSES["Sample"]
Label: Any = _CLASSES["Label"]
TimeSeries: Any = _CLASSES["TimeSeries"]
LabelMatcher: Any = _CLASSES["LabelMatcher"]
ReadHints: Any = _CLASSES["ReadHints"]
Query: Any = _CLASSES["Query"]
ReadRequest: Any = _CLASSES["ReadRequest"]
QueryResult: Any = _CLASSES["QueryResult"]
ReadResponse: Any = _CLASSES["ReadResponse"]
WriteRequest: Any = _CLASSES["WriteRequest"]
