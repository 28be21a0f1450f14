"""lpimg.wire: the byte layout of every frame and record, declared once with construct.

Pure parse/build, no state: retransmission, timers and sessions live in :mod:`lpimg.protocol`.
Parsing arbitrary bytes raises :class:`lpimg.WireError` (or its subclass
:class:`lpimg.ManifestError`) and nothing else.
"""

from lpimg.wire.auth import TAG_SIZE, TRAILER_SIZE, seal_layout, split_sealed
from lpimg.wire.codes import (
    DATA_HEADER_SIZE,
    LATENT_UNIT_PIXELS,
    MAX_FRAGMENTS,
    MAX_LAYER_COUNT,
    MAX_MTU,
    MIN_MTU,
    PROTOCOL_VERSION,
    START_HEADER_SIZE,
    AbortReason,
)
from lpimg.wire.crc import CRC_SIZE, crc32
from lpimg.wire.downlink import (
    AckFrame,
    DownlinkFrame,
    LayerCompleteFrame,
    RefineFrame,
    ServerAbortFrame,
    StopFrame,
    build_downlink,
    parse_downlink,
)
from lpimg.wire.manifest import Manifest, decode_manifest, encode_manifest
from lpimg.wire.records import (
    Descriptor,
    GroupHeader,
    build_descriptor,
    build_group_header,
    build_layer_record,
    check_layer_record,
    header_record_length,
    layer_record_size,
    parse_descriptor,
    parse_group_header,
)
from lpimg.wire.region import Region
from lpimg.wire.uplink import (
    AuthStartFrame,
    DataFrame,
    DeviceAbortFrame,
    PollFrame,
    ResumeFrame,
    StartFrame,
    UplinkFrame,
    build_uplink,
    parse_uplink,
)

__all__ = [
    "CRC_SIZE",
    "DATA_HEADER_SIZE",
    "LATENT_UNIT_PIXELS",
    "MAX_FRAGMENTS",
    "MAX_LAYER_COUNT",
    "MAX_MTU",
    "MIN_MTU",
    "PROTOCOL_VERSION",
    "START_HEADER_SIZE",
    "TAG_SIZE",
    "TRAILER_SIZE",
    "AbortReason",
    "AckFrame",
    "AuthStartFrame",
    "DataFrame",
    "Descriptor",
    "DeviceAbortFrame",
    "DownlinkFrame",
    "GroupHeader",
    "LayerCompleteFrame",
    "Manifest",
    "PollFrame",
    "RefineFrame",
    "Region",
    "ResumeFrame",
    "ServerAbortFrame",
    "StartFrame",
    "StopFrame",
    "UplinkFrame",
    "build_descriptor",
    "build_downlink",
    "build_group_header",
    "build_layer_record",
    "build_uplink",
    "check_layer_record",
    "crc32",
    "decode_manifest",
    "encode_manifest",
    "header_record_length",
    "layer_record_size",
    "parse_descriptor",
    "parse_downlink",
    "parse_group_header",
    "parse_uplink",
    "seal_layout",
    "split_sealed",
]
