"""Protobuf messages of the Prometheus remote_write 1.0 protocol, built at run time.

The schema below restates the wire format of ``prompb/types.proto`` and
``prompb/remote.proto`` (package ``prometheus``) field by field, as a
``FileDescriptorProto`` defined in code; no generated ``_pb2`` file is checked in.
The descriptors live in a private `DescriptorPool`, built on first use, so importing
this module registers nothing globally and cannot clash with another copy of the
same schema in the process.

Field numbers (remote_write 1.0)::

    WriteRequest   { repeated TimeSeries timeseries = 1; reserved 2;
                     repeated MetricMetadata metadata = 3; }
    TimeSeries     { repeated Label labels = 1; repeated Sample samples = 2;
                     repeated Exemplar exemplars = 3; repeated <Histogram> histograms = 4; }
    Label          { string name = 1; string value = 2; }
    Sample         { double value = 1; int64 timestamp = 2; }     // timestamp in ms
    Exemplar       { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }
    MetricMetadata { MetricType type = 1; string metric_family_name = 2;
                     string help = 4; string unit = 5; }

Native histograms (``TimeSeries.histograms``) are declared as opaque ``bytes``: a
length-delimited message and a ``bytes`` field share one wire type, so a request
carrying them parses, and the receiver can count (and refuse) them without this
module restating the whole histogram schema.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

_PACKAGE = "prometheus"
_FILE = "csf/prometheus_remote_write_v1.proto"
_PACKAGE_RAW = "csf_raw"
_FILE_RAW = "csf/prometheus_remote_write_v1_raw.proto"


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    *,
    repeated: bool = False,
    type_name: str = "",
) -> None:
    f = msg.field.add()
    f.name = name
    f.number = number
    f.type = kind  # type: ignore[assignment]
    f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL  # type: ignore[assignment]
    if type_name:
        f.type_name = f".{_PACKAGE}.{type_name}"


def file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """The remote_write 1.0 schema as a FileDescriptorProto (proto3)."""
    fd = descriptor_pb2.FileDescriptorProto(name=_FILE, package=_PACKAGE, syntax="proto3")

    metric_type = fd.enum_type.add(name="MetricType")
    for number, name in enumerate(
        ("UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM", "SUMMARY", "INFO", "STATESET")
    ):
        metric_type.value.add(name=name, number=number)

    label = fd.message_type.add(name="Label")
    _field(label, "name", 1, _F.TYPE_STRING)
    _field(label, "value", 2, _F.TYPE_STRING)

    sample = fd.message_type.add(name="Sample")
    _field(sample, "value", 1, _F.TYPE_DOUBLE)
    _field(sample, "timestamp", 2, _F.TYPE_INT64)

    exemplar = fd.message_type.add(name="Exemplar")
    _field(exemplar, "labels", 1, _F.TYPE_MESSAGE, repeated=True, type_name="Label")
    _field(exemplar, "value", 2, _F.TYPE_DOUBLE)
    _field(exemplar, "timestamp", 3, _F.TYPE_INT64)

    series = fd.message_type.add(name="TimeSeries")
    _field(series, "labels", 1, _F.TYPE_MESSAGE, repeated=True, type_name="Label")
    _field(series, "samples", 2, _F.TYPE_MESSAGE, repeated=True, type_name="Sample")
    _field(series, "exemplars", 3, _F.TYPE_MESSAGE, repeated=True, type_name="Exemplar")
    _field(series, "histograms", 4, _F.TYPE_BYTES, repeated=True)

    metadata = fd.message_type.add(name="MetricMetadata")
    mt = metadata.field.add(name="type", number=1, type=_F.TYPE_ENUM, label=_F.LABEL_OPTIONAL)
    mt.type_name = f".{_PACKAGE}.MetricType"
    _field(metadata, "metric_family_name", 2, _F.TYPE_STRING)
    _field(metadata, "help", 4, _F.TYPE_STRING)
    _field(metadata, "unit", 5, _F.TYPE_STRING)

    request = fd.message_type.add(name="WriteRequest")
    _field(request, "timeseries", 1, _F.TYPE_MESSAGE, repeated=True, type_name="TimeSeries")
    request.reserved_range.add(start=2, end=3)
    _field(request, "metadata", 3, _F.TYPE_MESSAGE, repeated=True, type_name="MetricMetadata")
    return fd


def raw_file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """A view of the same wire format that keeps each ``WriteRequest.timeseries`` entry as
    raw ``bytes`` (field 1 only; metadata and anything else become unknown fields)."""
    fd = descriptor_pb2.FileDescriptorProto(name=_FILE_RAW, package=_PACKAGE_RAW, syntax="proto3")
    request = fd.message_type.add(name="WriteRequestRaw")
    f = request.field.add()
    f.name = "timeseries"
    f.number = 1
    f.type = _F.TYPE_BYTES  # type: ignore[assignment]
    f.label = _F.LABEL_REPEATED  # type: ignore[assignment]
    return fd


@dataclass(frozen=True)
class RemoteWriteMessages:
    """Message classes of the remote_write 1.0 schema."""

    WriteRequest: Any
    TimeSeries: Any
    Label: Any
    Sample: Any
    Exemplar: Any
    MetricMetadata: Any


@functools.cache
def messages() -> RemoteWriteMessages:
    """The message classes (built once, in a private descriptor pool)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor_proto())

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))

    return RemoteWriteMessages(
        WriteRequest=cls("WriteRequest"),
        TimeSeries=cls("TimeSeries"),
        Label=cls("Label"),
        Sample=cls("Sample"),
        Exemplar=cls("Exemplar"),
        MetricMetadata=cls("MetricMetadata"),
    )


@functools.cache
def raw_write_request() -> Any:
    """``WriteRequestRaw``: a WriteRequest read with every timeseries entry left as ``bytes``
    (see `raw_file_descriptor_proto`); the receiver's fast decoder walks those bytes itself."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(raw_file_descriptor_proto())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE_RAW}.WriteRequestRaw"))
