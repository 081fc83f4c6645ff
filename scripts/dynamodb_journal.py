"""The files that keep the embedded DynamoDB's data: a journal of writes, compacted into snapshots.

A data directory holds, for a generation N, `journal-N.jsonl` (every write since generation N
began, one JSON record per line, in the order the writes were applied) and `snapshot-N.jsonl`
(the whole state at the moment journal N began). Loading reads the newest snapshot and replays
every journal from its generation on. A new generation starts its journal first and writes its
snapshot after, under a temporary name renamed into place once complete and fsync'd; only then
are older files removed, so a crash at any point leaves a complete chain.

Each record is written with one `write(2)` before the write is acknowledged, so whatever a
client was told is stored survives a `kill -9` of every process; the journal is fsync'd by
`sync()` (about every second), which bounds what a power cut can take. A crash mid-write can
leave an incomplete last line: it was never acknowledged and is ignored. Any other unreadable
line is an error: data is never dropped silently.

A snapshot line may carry a payload after its record, separated by a tab (which JSON text never
holds unescaped): `<record>\t<payload>`. The payload is kept undecoded, as a memoryview of the
line, in the record's "payload" key; scripts/dynamodb_partitions.py stores a partition's items that way, so a start
reads a large snapshot without decoding every item. The records themselves are opaque JSON
objects here; scripts/embedded_dynamodb.py says what they mean.

Versions: journals are version 1; snapshots are version 2 (payload lines), and version 1
snapshots (one record per item) are still read. A lock file (`flock`, released by the kernel when its holder dies, even by SIGKILL)
keeps a second process out of a directory in use.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

FORMAT = "backchat-dynamodb"
JOURNAL_VERSION = 1
SNAPSHOT_VERSION = 2
_READABLE_VERSIONS = {"journal": (1,), "snapshot": (1, 2)}
LOCK_NAME = "lock"
# A journal is compacted once it holds more than this and more than the last snapshot,
# so compaction costs O(1) amortised per byte written, whatever the size of the data.
COMPACT_MIN_BYTES = 64 * 1024 * 1024

_FILE_NAME = re.compile(r"^(journal|snapshot)-(\d+)\.jsonl$")
_JOURNAL = "journal"
_SNAPSHOT = "snapshot"


class JournalError(Exception):
    """The data directory cannot be used; the message says why and what to do."""


class DataDirectoryInUse(JournalError):
    """Another process holds the data directory's lock."""


def lock_holder(directory: Path) -> int | None:
    """Return the pid holding the directory's lock (0 if unknown), or None if it is free."""
    try:
        lock_file = open(directory / LOCK_NAME, "rb")
    except FileNotFoundError:
        return None
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            recorded = lock_file.read().strip()
            return int(recorded) if recorded.isdigit() else 0
        return None


def encode_record(record: dict[str, Any]) -> bytes:
    """Return the record as one line of JSON (binary values as base64, as DynamoDB's JSON has them)."""
    return encode_payload(record) + b"\n"


def encode_record_with_payload(record: dict[str, Any], payload: bytes) -> bytes:
    """Return a snapshot line holding a record and its payload (one line of JSON, no tab)."""
    return encode_payload(record) + b"\t" + payload + b"\n"


def encode_payload(value: Any) -> bytes:
    """Return a value as compact JSON on one line (binary values as base64)."""
    return json.dumps(value, separators=(",", ":"), default=_base64).encode("ascii")


def _base64(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} cannot be stored in the journal")


class Journal:
    """An open data directory: reads what it holds, appends records, writes snapshots."""

    def __init__(self, directory: Path, lock_file: Any, compact_min_bytes: int) -> None:
        self.directory = directory
        self._lock_file = lock_file
        self._compact_min_bytes = compact_min_bytes
        # Guards the journal's file descriptor against a concurrent switch or sync.
        self._guard = threading.Lock()
        self._fd: int | None = None
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        # What `records()` read: the snapshot's format version and the journals' record count.
        self.snapshot_version: int | None = None
        self.journal_records = 0
        self._read_without_records: list[Path] = []

    @classmethod
    def open(cls, directory: Path, compact_min_bytes: int = COMPACT_MIN_BYTES) -> "Journal":
        """Lock the directory (creating it if needed); raise DataDirectoryInUse if it is taken."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock_file = open(directory / LOCK_NAME, "a+b")
        except OSError as error:
            raise JournalError(f"cannot use {directory} for the data: {error.strerror}") from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            holder = lock_holder(directory)
            raise DataDirectoryInUse(
                f"{directory} is in use by another process (pid {holder or 'unknown'}); "
                "stop it or use another data directory"
            ) from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()).encode("ascii"))
        lock_file.flush()
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()
        return cls(directory, lock_file, compact_min_bytes)

    # -- reading --------------------------------------------------------------

    def records(self) -> Iterator[dict[str, Any]]:
        """Yield the stored records in order: the newest snapshot's, then each later journal's."""
        base = max(self._generations(_SNAPSHOT), default=0)
        if base:
            yield from self._read_snapshot(self._path(_SNAPSHOT, base))
        for generation in sorted(g for g in self._generations(_JOURNAL) if g >= base):
            yield from self._read_journal(self._path(_JOURNAL, generation))

    def _read_snapshot(self, path: Path) -> Iterator[dict[str, Any]]:
        count, ended = 0, False
        for number, line in self._lines(path):
            if not line.endswith(b"\n"):
                raise self._damaged(path, number, "the snapshot ends in the middle of a line")
            tab = line.find(b"\t")
            record = self._decode(path, number, line if tab < 0 else line[:tab])
            if tab >= 0:
                record["payload"] = memoryview(line)[tab + 1:-1]
            if number == 1:
                self.snapshot_version = self._check_header(path, record, _SNAPSHOT)
            elif ended:
                raise self._damaged(path, number, "a record follows the snapshot's end marker")
            elif set(record) == {"end"}:
                ended = record["end"] == count
                if not ended:
                    raise self._damaged(path, number, f"the snapshot holds {count} records, "
                                                      f"its end marker says {record['end']}")
            else:
                count += 1
                yield record
        if not ended:
            raise self._damaged(path, count + 1, "the snapshot ends before its end marker")
        self._snapshot_bytes = path.stat().st_size

    def _read_journal(self, path: Path) -> Iterator[dict[str, Any]]:
        records = 0
        for number, line in self._lines(path):
            if not line.endswith(b"\n"):
                # A process killed mid-write leaves its last line incomplete: a write that
                # was never acknowledged, so it is not replayed.
                break
            record = self._decode(path, number, line)
            if number == 1:
                self._check_header(path, record, _JOURNAL)
            else:
                records += 1
                yield record
        self.journal_records += records
        if not records:
            self._read_without_records.append(path)

    def _lines(self, path: Path) -> Iterator[tuple[int, bytes]]:
        with open(path, "rb", buffering=1 << 20) as stored:
            yield from enumerate(stored, start=1)

    def _check_header(self, path: Path, header: dict[str, Any], kind: str) -> int:
        if header.get("format") != FORMAT or header.get("kind") != kind:
            raise self._damaged(path, 1, f"it is not a backchat DynamoDB {kind}")
        readable = _READABLE_VERSIONS[kind]
        if header.get("version") not in readable:
            raise JournalError(
                f"{path} has format version {header.get('version')!r}; this backchat reads "
                f"{kind} versions {', '.join(map(str, readable))}. Use the backchat that "
                f"wrote it, or move {self.directory} away to start empty."
            )
        return int(header["version"])

    def _decode(self, path: Path, number: int, line: bytes) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError:
            raise self._damaged(path, number, "it is not valid JSON") from None
        if not isinstance(record, dict):
            raise self._damaged(path, number, "it is not a JSON object")
        return record

    def _damaged(self, path: Path, number: int, why: str) -> JournalError:
        return JournalError(
            f"cannot load {path}, line {number}: {why}. The file is damaged; move "
            f"{self.directory} away to start empty (or repair the file)."
        )

    # -- writing --------------------------------------------------------------

    def start_generation(self) -> int:
        """Send every later append to a new journal file; return its generation.

        The caller must let no write happen between this and capturing the state it passes
        to `write_snapshot` for the same generation.
        """
        generation = max([*self._generations(_JOURNAL), *self._generations(_SNAPSHOT)],
                         default=0) + 1
        path = self._path(_JOURNAL, generation)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        header = encode_record({"format": FORMAT, "kind": _JOURNAL, "version": JOURNAL_VERSION})
        _write_all(fd, header)
        with self._guard:
            previous, self._fd = self._fd, fd
            self._journal_bytes = len(header)
        if previous is not None:
            os.fsync(previous)
            os.close(previous)
        self._sync_directory()
        return generation

    def append(self, record: dict[str, Any]) -> None:
        """Write one record to the journal (one write call; fsync'd later by `sync`)."""
        line = encode_record(record)
        with self._guard:
            if self._fd is None:
                raise JournalError("the journal is not open for writing")
            _write_all(self._fd, line)
            self._journal_bytes += len(line)

    def write_snapshot(self, generation: int, lines: Iterable[bytes]) -> None:
        """Store encoded records as the snapshot of a generation, then drop older files."""
        final = self._path(_SNAPSHOT, generation)
        temporary = final.with_name(final.name + ".tmp")
        count = 0
        with open(temporary, "wb") as snapshot:
            snapshot.write(encode_record({"format": FORMAT, "kind": _SNAPSHOT,
                                          "version": SNAPSHOT_VERSION}))
            for line in lines:
                snapshot.write(line)
                count += 1
            snapshot.write(encode_record({"end": count}))
            snapshot.flush()
            os.fsync(snapshot.fileno())
        os.replace(temporary, final)
        self._sync_directory()
        self._snapshot_bytes = final.stat().st_size
        for kind in (_JOURNAL, _SNAPSHOT):
            for old in self._generations(kind):
                if old < generation:
                    self._path(kind, old).unlink()

    def discard_empty_journals(self) -> None:
        """Delete the journals `records()` read that held no record (nothing to compact)."""
        for path in self._read_without_records:
            path.unlink(missing_ok=True)
        self._read_without_records = []
        self._sync_directory()

    def compaction_due(self) -> bool:
        """Return True once the journal outgrew both the threshold and the last snapshot."""
        return self._journal_bytes > max(self._compact_min_bytes, self._snapshot_bytes)

    def sync(self) -> None:
        """fsync the journal: what was appended so far survives a power cut."""
        with self._guard:
            if self._fd is None:
                return
            # A duplicate, so a generation switch may close the original meanwhile.
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """fsync and close the journal and release the directory's lock."""
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.fsync(fd)
            os.close(fd)
        self._lock_file.close()

    # -- files ----------------------------------------------------------------

    def _generations(self, kind: str) -> list[int]:
        found = []
        for entry in self.directory.iterdir():
            match = _FILE_NAME.match(entry.name)
            if match and match.group(1) == kind:
                found.append(int(match.group(2)))
        return found

    def _path(self, kind: str, generation: int) -> Path:
        return self.directory / f"{kind}-{generation:06d}.jsonl"

    def _sync_directory(self) -> None:
        # Makes the new and renamed names themselves durable.
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
