"""Reading back what an offline W&B run wrote (tests only): its ``.wandb`` record file, history,
summary and media; and the environment that keeps W&B offline and inside a temporary folder."""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path


def wandb_environment(home: Path) -> dict:
    """Environment variables for an offline, silent W&B whose config, cache and data folders (and
    HOME, for ~/.netrc) are under ``home``; with no API key nothing could ever log in."""
    home = Path(home)
    env = {"HOME": str(home), "NETRC": str(home / ".netrc"), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_DIR": str(home / "default_dir")}  # WANDB_DIR: only used if a logger forgot dir=
    env.update({f"WANDB_{name}_DIR": str(home / name.lower()) for name in ("CONFIG", "CACHE", "DATA")})
    return env


BLOCK = 32768  # the record log's block size (LevelDB's log format, which W&B's files use)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path):
    """The protobuf Records of a ``.wandb`` file. Its layout (wandb-core writes it; wandb 0.31
    has no Python reader of its own): a 7-byte header ``:W&B``, magic 0xBEE1 (uint16 LE),
    version 0; then LevelDB log records in 32 KiB blocks: checksum (uint32 LE, CRC-32 of the
    type byte then the payload), payload length (uint16 LE), type (full / first / middle /
    last piece of a record), payload; a block's last < 7 bytes are padding."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack_from("<HB", data, 4) == (0xBEE1, 0), "not a .wandb file"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        payload = data[pos + 7:pos + 7 + length]
        assert kind in (FULL, FIRST, MIDDLE, LAST) and len(payload) == length, f"bad record header at {pos}"
        assert crc == zlib.crc32(payload, zlib.crc32(bytes([kind]))), f"bad checksum at {pos}"
        pos += 7 + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    assert pos == len(data) or not data[pos:].strip(b"\0"), "trailing bytes after the last record"
    return records


def items(entries) -> dict:
    """History items / summary or config updates -> {key: value}. wandb-core splits a nested
    value (a media reference) into one entry per leaf, its path in ``nested_key``: nested again."""
    out = {}
    for e in entries:
        *parents, leaf = [e.key] if e.key else list(e.nested_key)
        node = out
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = json.loads(e.value_json)
    return out


class Run:
    """What one offline run left on disk: its folder, records by type, history rows, summary."""

    def __init__(self, run_path: Path):
        self.path = run_path
        (wandb_file,) = run_path.glob("run-*.wandb")
        self.records = read_records(wandb_file)
        self.by_type = {}
        for r in self.records:
            self.by_type.setdefault(r.WhichOneof("record_type"), []).append(r)
        self.history = [items(r.history.item) for r in self.by_type.get("history", [])]
        self.summary = {}
        for r in self.by_type.get("summary", []):  # updates in order: the last value of a key wins
            self.summary.update(items(r.summary.update))
        self.metrics = {r.metric.name: r.metric for r in self.by_type.get("metric", [])}

    @classmethod
    def finished(cls, run_path: Path, timeout: float = 30.0) -> "Run":
        """The run once its record file is complete. ``finish()`` returns when W&B's service has
        the exit record, but the service writes the file in the background and flushes it when
        it closes the run's stream (at the latest when the process exits): poll until the file
        parses to its last record, the exit record."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                run = cls(run_path)
                if run.records and run.records[-1].WhichOneof("record_type") == "exit":
                    return run
            except (AssertionError, ValueError):  # a record cut short or not yet there
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"{run_path}: no exit record after {timeout} s")
            time.sleep(0.05)

    def series(self, key: str, axis: str) -> list[tuple]:
        return [(row[axis], row[key]) for row in self.history if key in row]

    def media(self, key: str) -> tuple[dict, Path]:
        """The history value of a media key (W&B's JSON reference) and the file it names."""
        (ref,) = [row[key] for row in self.history if key in row]
        return ref, self.path / "files" / ref["path"]
