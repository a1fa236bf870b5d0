"""Read the records of an offline W&B run file (`run-*.wandb`) to check what a run really logged.

The file is a W&B header (":W&B", magic, version: 7 bytes) followed by a LevelDB-style log of 32 KiB
blocks; each chunk has a 7-byte header (crc32c, length, type FULL/FIRST/MIDDLE/LAST) and the payload of a
protobuf `Record`, possibly split over blocks.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, records, pending = 7, [], b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        elif kind == LAST:
            pending += payload
        record = pb.Record()
        record.ParseFromString(pending)
        records.append(record)
    return records


def logged_history(path: Path) -> list[dict[str, object]]:
    """The history rows (`wandb.log` calls) of a run file, as dicts of key -> value."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return rows


def run_info(path: Path) -> dict[str, object]:
    """Name, group and config of a run. The config is what `wandb.init` got (the run record) updated by every
    later `wandb.config.update` (config records: where a logger's `log_hyperparams` goes)."""
    info: dict[str, object] = {}
    config: dict[str, object] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run" and not info:
            info = {"name": record.run.display_name, "group": record.run.run_group}
            updates = record.run.config.update
        elif kind == "config":
            updates = record.config.update
        else:
            continue
        config.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in updates})
    return {**info, "config": config} if info else {}
