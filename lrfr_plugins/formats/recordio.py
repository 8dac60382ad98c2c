"""dmlc RecordIO (``.rec`` + ``.idx``) and the InsightFace training-set conventions, without mxnet.

Byte layout (``PROTOCOLS.md`` §1.2, ``dmlc/dmlc-core src/recordio.cc``, checked against mxnet 1.9.1): a file is a
plain concatenation of records. Each record part is::

    uint32 magic = 0xCED7230A   (bytes 0A 23 D7 CE)
    uint32 lrec  = cflag << 29 | length
    length bytes of payload, then zero padding up to a multiple of 4

The writer scans the payload at offsets that are multiples of 4; at every copy of the magic word it ends the current
part (cflag 1 for the first part, 2 afterwards), drops the 4 magic bytes and starts a new part. The remainder is the
last part (cflag 3), or the whole record (cflag 0) if there was no hit. The reader puts the magic words back.

On top of that, ``mx.recordio.pack`` prefixes each payload with a 24-byte ``IRHeader`` (``struct '<IfQQ'``: flag,
label, id, id2); ``flag > 0`` means ``flag`` float32 labels follow the header (§1.3). An InsightFace training folder
holds ``train.rec``, ``train.idx`` and ``property`` (§1.4, §1.5); see :class:`TrainingSet`.

All readers raise :class:`~lrfr_plugins.errors.DataError` naming the file, the byte offset or record key, and what
to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import pathlib
import shlex
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..errors import DataError
from ..write_errors import writing
from .images import decode_image, encode_image

PathLike = str | os.PathLike

#: dmlc ``RecordIOWriter::kMagic``.
MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)  # b"\x0a\x23\xd7\xce"
#: ``lrec`` packs a 3-bit continuation flag above a 29-bit length.
LENGTH_BITS = 29
LENGTH_MASK = (1 << LENGTH_BITS) - 1
MAX_PAYLOAD = LENGTH_MASK  # one part holds at most 2**29 - 1 bytes

IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24

_HEAD = struct.Struct("<II")
_CFLAG_NAMES = {0: "whole record", 1: "first part", 2: "middle part", 3: "last part"}


# ---------------------------------------------------------------------------------------------------------------------
# Record framing
# ---------------------------------------------------------------------------------------------------------------------

def _pad4(n: int) -> int:
    return (n + 3) & ~3


def encode_record(payload: bytes) -> bytes:
    """Frame one payload exactly as dmlc ``RecordIOWriter::WriteRecord`` does (multi-part split included)."""
    payload = bytes(payload)
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"a RecordIO payload must be shorter than 2**29 bytes, got {n}")
    out = []
    dptr = 0
    pos = payload.find(MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:  # aligned hit: ends the current part, the magic itself is dropped
            out.append(_HEAD.pack(MAGIC, ((1 if dptr == 0 else 2) << LENGTH_BITS) | (pos - dptr)))
            out.append(payload[dptr:pos])
            dptr = pos + 4
            pos = payload.find(MAGIC_BYTES, dptr)
        else:
            pos = payload.find(MAGIC_BYTES, pos + 1)
    out.append(_HEAD.pack(MAGIC, ((3 if dptr != 0 else 0) << LENGTH_BITS) | (n - dptr)))
    out.append(payload[dptr:])
    out.append(b"\0" * (_pad4(n) - n))  # split points are aligned, so only the total length needs padding
    return b"".join(out)


class _File:
    """Positional reads that are safe after ``fork`` (DataLoader workers) and picklable (spawned workers)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise DataError(f"{self.path}: RecordIO file not found. Check the dataset path.") from None
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open the RecordIO file ({exc}).") from None
        self.size = os.fstat(self._fd).st_size

    def pread(self, offset: int, n: int) -> bytes:
        if self._fd is None:
            self._open()
        if hasattr(os, "pread"):
            chunks = []
            while n > 0:
                chunk = os.pread(self._fd, n, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                n -= len(chunk)
                offset += len(chunk)
            return b"".join(chunks)
        with self._lock:  # pragma: no cover - Windows has no pread
            os.lseek(self._fd, offset, os.SEEK_SET)
            return os.read(self._fd, n)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.path, self.size = state["path"], state["size"]
        self._fd, self._lock = None, threading.Lock()


def _walk_record(f: _File, offset: int, what: str, hint: str, *, read: bool) -> tuple[bytes | None, int]:
    """Follow the (possibly multi-part) record at ``offset``, checking every part header; return its payload
    (``read``; else None, the parts are skipped) and the offset of the next record."""
    parts: list[bytes] = []
    pos = offset
    first = True
    while True:
        head = f.pread(pos, 8)
        if len(head) < 8:
            raise DataError(f"{f.path}: {what}: the record header at byte offset {pos} is cut off: the file ends at "
                            f"byte {f.size}. {hint}")
        magic, lrec = _HEAD.unpack(head)
        if magic != MAGIC:
            raise DataError(f"{f.path}: {what}: bad magic 0x{magic:08X} at byte offset {pos} (expected 0x{MAGIC:08X}"
                            f", bytes 0A 23 D7 CE). {hint}")
        cflag, length = lrec >> LENGTH_BITS, lrec & LENGTH_MASK
        if cflag not in ((0, 1) if first else (2, 3)):
            expected = "0 (whole record) or 1 (first part)" if first else "2 (middle) or 3 (last part)"
            raise DataError(f"{f.path}: {what}: continuation flag {cflag} at byte offset {pos}, expected {expected}. "
                            f"{hint}")
        end = pos + 8 + _pad4(length)
        if end > f.size:
            raise DataError(f"{f.path}: {what}: the record part at byte offset {pos} declares {length} bytes, which "
                            f"runs past the end of the file (byte {f.size}). {hint}")
        if read:
            parts.append(f.pread(pos + 8, length))
        pos, first = end, False
        if cflag in (0, 3):
            return (b"".join(parts) if read else None), pos
        if read:
            parts.append(MAGIC_BYTES)


def rebuild_index_command(rec_path: PathLike, idx_path: PathLike | None = None) -> str:
    """The shell command that rebuilds the .idx of ``rec_path``: what every hint about a bad .idx tells the user."""
    rec_path = pathlib.Path(rec_path)
    cmd = f"lrfr data index {shlex.quote(str(rec_path))}"
    if idx_path is not None and pathlib.Path(idx_path) != rec_path.with_suffix(".idx"):
        cmd += f" --idx {shlex.quote(str(idx_path))}"
    return cmd


def _rebuild_hint(rec_path: PathLike, idx_path: PathLike | None = None) -> str:
    return (f"Rebuild it with: {rebuild_index_command(rec_path, idx_path)} "
            "(in Python: lrfr_plugins.formats.rebuild_index).")


def _read_record(f: _File, offset: int, what: str) -> tuple[bytes, int]:
    """Read the (possibly multi-part) record starting at ``offset``; return the payload and the next offset."""
    hint = ("The file is truncated or corrupt (re-download or re-pack it), or the .idx does not belong to this .rec "
            f"(rebuild it with: {rebuild_index_command(f.path)}).")
    payload, end = _walk_record(f, offset, what, hint, read=True)
    return payload or b"", end


def _scan_offsets(f: _File, *, progress: bool = False) -> list[int]:
    """Offsets of every record, by a sequential scan of the headers (payloads are skipped, not read)."""
    from tqdm.auto import tqdm

    offsets = []
    pos = 0
    bar = tqdm(total=f.size, unit="B", unit_scale=True, desc=f"scan {f.path.name}", disable=not progress)
    while pos < f.size:
        bar.update(pos - bar.n)
        what = f"record #{len(offsets)} (sequential scan)"
        offsets.append(pos)
        _, pos = _walk_record(f, pos, what, "The file is truncated or corrupt; re-download or re-pack it.",
                              read=False)
    bar.update(pos - bar.n)
    bar.close()
    return offsets


def _parse_idx(idx_path: pathlib.Path, rec: _File) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``key<TAB>offset`` lines into (keys, offsets) int64 arrays, in file order."""
    try:
        text = idx_path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise DataError(f"{idx_path}: index file not found (it lists where each record of {rec.path} starts). "
                        f"{_rebuild_hint(rec.path, idx_path)}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{idx_path}: not a text .idx file (non-ASCII byte at offset {exc.start}). "
                        f"{_rebuild_hint(rec.path, idx_path)}") from None
    lines = text.splitlines()
    try:
        fields = [ln.split() for ln in lines]
        pairs = [(int(a[0]), int(a[1])) for a in fields if a]
        if any(len(a) != 2 for a in fields if a):
            raise ValueError
    except (ValueError, IndexError):
        for lineno, ln in enumerate(lines, 1):
            a = ln.split()
            if not a:
                continue
            try:
                if len(a) != 2:
                    raise ValueError
                int(a[0]), int(a[1])
            except ValueError:
                raise DataError(f"{idx_path}: line {lineno}: expected 'key<TAB>byte_offset' with two integers, got "
                                f"{ln[:80]!r}. {_rebuild_hint(rec.path, idx_path)}") from None
        raise  # pragma: no cover
    keys = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    offsets = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
    bad = np.flatnonzero((offsets < 0) | (offsets + 8 > rec.size) | (offsets % 4 != 0))
    if bad.size:
        i = int(bad[0])
        o = int(offsets[i])
        why = (f"points past the end of {rec.path} ({rec.size} bytes)" if o < 0 or o + 8 > rec.size
               else "is not a multiple of 4, so no record can start there")
        raise DataError(f"{idx_path}: line {_line_of(lines, i)}: key {int(keys[i])} has byte offset {o}, which "
                        f"{why}. The .rec is truncated or the .idx belongs to another file: re-download the pair, or "
                        f"rebuild the index with: {rebuild_index_command(rec.path, idx_path)}.")
    uniq, counts = np.unique(keys, return_counts=True)
    if uniq.size != keys.size:
        dup = int(uniq[counts > 1][0])
        where = [_line_of(lines, int(i)) for i in np.flatnonzero(keys == dup)[:3]]
        raise DataError(f"{idx_path}: key {dup} appears more than once (lines {where}). "
                        f"{_rebuild_hint(rec.path, idx_path)}")
    _check_covers(idx_path, rec, offsets)
    return keys, offsets


def _check_covers(idx_path: pathlib.Path, rec: _File, offsets: np.ndarray) -> None:
    """The last record the .idx lists must end where the .rec ends: a cut or stale .idx would otherwise make a
    pack read as a smaller one without a word (one header read)."""
    if not offsets.size:
        return
    last = int(offsets.max())
    _, end = _walk_record(rec, last, f"the last record the .idx lists (byte offset {last})",
                          f"The .idx does not belong to this .rec. {_rebuild_hint(rec.path, idx_path)}", read=False)
    if end < rec.size:
        raise DataError(f"{idx_path}: lists {offsets.size} records, the last ending at byte {end}, but {rec.path} "
                        f"holds {rec.size} bytes: the .idx is cut short or older than the .rec, and records would be "
                        f"missed. {_rebuild_hint(rec.path, idx_path)}")


def _line_of(lines: list[str], entry: int) -> int:
    """1-based line number of the ``entry``-th non-empty line."""
    seen = -1
    for lineno, ln in enumerate(lines, 1):
        if ln.strip():
            seen += 1
            if seen == entry:
                return lineno
    return entry + 1  # pragma: no cover


class RecordReader:
    """Random access to a dmlc RecordIO file, like mxnet's ``MXIndexedRecordIO(idx, rec, 'r')``.

    ``idx_path``: the ``.idx`` file (``key<TAB>byte_offset`` per line). ``None`` uses ``<rec without suffix>.idx``
    when it exists and otherwise scans the ``.rec`` once, keying records ``0, 1, ...`` in file order (as
    ``MXRecordIO`` reads them). ``keys`` is an int64 array in ``.idx`` order.

    Safe to share with forked DataLoader workers (positional reads, no shared file position) and picklable.
    """

    def __init__(self, rec_path: PathLike, idx_path: PathLike | None = None):
        self.rec_path = pathlib.Path(rec_path)
        self._file = _File(self.rec_path)
        if idx_path is None:
            sibling = self.rec_path.with_suffix(".idx")
            idx_path = sibling if sibling.exists() else None
        self.idx_path = pathlib.Path(idx_path) if idx_path is not None else None
        if self.idx_path is not None:
            keys, offsets = _parse_idx(self.idx_path, self._file)
        else:
            offs = _scan_offsets(self._file)
            keys, offsets = np.arange(len(offs), dtype=np.int64), np.asarray(offs, dtype=np.int64)
        keys.setflags(write=False)
        self.keys = keys
        self._offsets = offsets
        n = len(keys)
        # Contiguous keys (the usual case) need no dict: key k lives at row k - keys[0].
        self._base: int | None = None
        self._pos: dict[int, int] | None = None
        if n and np.array_equal(keys, np.arange(keys[0], keys[0] + n, dtype=np.int64)):
            self._base = int(keys[0])
        else:
            self._pos = {int(k): i for i, k in enumerate(keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def _row(self, key: int) -> int | None:
        key = int(key)
        if self._base is not None:
            row = key - self._base
            return row if 0 <= row < len(self.keys) else None
        return self._pos.get(key) if self._pos is not None else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (int, np.integer)) and self._row(int(key)) is not None

    def offset(self, key: int) -> int:
        """Byte offset of record ``key`` in the ``.rec``."""
        row = self._row(key)
        if row is None:
            src = self.idx_path if self.idx_path is not None else f"{self.rec_path} (scanned, keys 0..{len(self)-1})"
            raise KeyError(f"record key {key} is not in {src}")
        return int(self._offsets[row])

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (multi-part records reassembled)."""
        return _read_record(self._file, self.offset(key), f"record key {key}")[0]

    def read_record(self, key: int) -> tuple[IRHeader, bytes]:
        """``unpack(read(key))``: the IRHeader and the bytes after it (usually an encoded image)."""
        return unpack(self.read(key), where=f"{self.rec_path}: record key {key}")

    def items(self) -> Iterator[tuple[int, bytes]]:
        """(key, payload) for every record, in ``.idx`` order."""
        for k in self.keys:
            yield int(k), self.read(int(k))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordReader({str(self.rec_path)!r}, {len(self)} records)"


def scan_index(rec_path: PathLike, *, progress: bool = False) -> tuple[list[int], list[int], str]:
    """Keys and offsets of every record of a ``.rec`` without its ``.idx``, by a sequential scan, and how keys were
    chosen. InsightFace writers (face2rec2, im2rec, RecBuilder, ``lrfr data pack``) store each record's key as the
    IRHeader ``id``, but not in file order (face2rec2 writes record 0 after the images), so keys come from those ids
    when every record has one and they are unique; otherwise records are keyed 0, 1, ... in file order."""
    f = _File(pathlib.Path(rec_path))
    try:
        offsets = _scan_offsets(f, progress=progress)
        ids = []
        for pos in offsets:
            start = f.pread(pos + 8, IR_SIZE)
            if len(start) < IR_SIZE:
                break
            ids.append(struct.unpack(IR_FORMAT, start)[2])
    finally:
        f.close()
    if len(ids) == len(offsets) and len(set(ids)) == len(ids) and all(i < 2 ** 63 for i in ids):
        return ids, offsets, "IRHeader ids"
    return list(range(len(offsets))), offsets, "file order"


def rebuild_index(rec_path: PathLike, idx_path: PathLike | None = None, *, progress: bool = False) -> int:
    """Scan ``rec_path`` and (re)write its ``.idx`` atomically (keys as :func:`scan_index` chooses them).

    Returns the number of records.
    """
    rec_path = pathlib.Path(rec_path)
    idx_path = pathlib.Path(idx_path) if idx_path is not None else rec_path.with_suffix(".idx")
    keys, offsets, _ = scan_index(rec_path, progress=progress)
    atomic_write_text(idx_path, "".join(f"{k}\t{o}\n" for k, o in zip(keys, offsets)))
    return len(offsets)


class RecordWriter:
    """Write a ``.rec`` + ``.idx`` pair the way mxnet's ``MXIndexedRecordIO(idx, rec, 'w').write_idx`` does.

    Both files are written to temporary files beside the targets and renamed into place by :meth:`close` (or when
    the ``with`` block ends without an exception); an exception or :meth:`abort` leaves no partial files behind.
    ``idx_path=None`` means ``<rec without suffix>.idx``. Use it as a context manager::

        with RecordWriter("train.rec") as w:
            w.write(pack(IRHeader(0, 3.0, 1, 0), jpeg_bytes), key=1)
    """

    def __init__(self, rec_path: PathLike, idx_path: PathLike | None = None):
        self.rec_path = pathlib.Path(rec_path)
        self.idx_path = pathlib.Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        if self.idx_path.resolve() == self.rec_path.resolve():
            raise ValueError(f"the index path must differ from the record path ({self.rec_path})")
        self._stack = contextlib.ExitStack()
        tmp_rec = self._stack.enter_context(atomic_path(self.rec_path))
        tmp_idx = self._stack.enter_context(atomic_path(self.idx_path))
        self._rec: BinaryIO = open(tmp_rec, "wb")
        self._idx = open(tmp_idx, "w", encoding="ascii", newline="\n")
        self._tell = 0
        self._keys: set[int] = set()
        self._next_key = 0
        self.closed = False

    def write(self, payload: bytes, key: int | None = None) -> int:
        """Append one record; ``key=None`` takes one more than the largest key so far. Returns its byte offset."""
        if self.closed:
            raise ValueError(f"{self.rec_path}: the writer is closed")
        key = self._next_key if key is None else int(key)
        if key in self._keys:
            raise ValueError(f"{self.rec_path}: record key {key} was already written")
        data = encode_record(payload)
        offset = self._tell
        with writing(self.rec_path):
            self._rec.write(data)
        with writing(self.idx_path):
            self._idx.write(f"{key}\t{offset}\n")
        self._tell += len(data)
        self._keys.add(key)
        self._next_key = max(self._next_key, key + 1)
        return offset

    def __len__(self) -> int:
        return len(self._keys)

    def close(self) -> None:
        """Flush, fsync and move both files into place."""
        if self.closed:
            return
        self.closed = True
        try:
            for fh, path in ((self._rec, self.rec_path), (self._idx, self.idx_path)):
                with writing(path):
                    fh.flush()
                    os.fsync(fh.fileno())
                    fh.close()
        except BaseException as exc:
            self._close_quietly()
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()

    def _close_quietly(self) -> None:
        """Close both temp files whatever their unflushed buffers do (a full disk fails every flush again)."""
        for fh in (self._rec, self._idx):
            with contextlib.suppress(OSError):
                fh.close()

    def abort(self) -> None:
        """Discard everything written; the target files are left as they were."""
        if self.closed:
            return
        self.closed = True
        self._close_quietly()
        exc = RuntimeError("RecordWriter aborted")
        with contextlib.suppress(RuntimeError):
            self._stack.__exit__(RuntimeError, exc, None)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------------------------------
# IRHeader
# ---------------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class IRHeader:
    """mxnet's ``IRHeader(flag, label, id, id2)``.

    After :func:`unpack`, ``label`` is a ``float`` when ``flag == 0`` and a read-only float32 array of ``flag``
    values otherwise (``header.label`` is then 0 on disk). For :func:`pack`, a number forces ``flag = 0`` and a
    sequence/array sets ``flag = len(label)``, as in ``mx.recordio.pack``.
    """

    flag: int
    label: Any
    id: int = 0
    id2: int = 0

    @property
    def labels(self) -> np.ndarray:
        """The label(s) as a 1-D float32 array (one element when ``flag == 0``)."""
        return np.atleast_1d(np.asarray(self.label, dtype=np.float32))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IRHeader):
            return NotImplemented
        return ((self.flag, self.id, self.id2) == (other.flag, other.id, other.id2)
                and np.shape(self.label) == np.shape(other.label)
                and bool(np.all(np.asarray(self.label, np.float32) == np.asarray(other.label, np.float32))))

    __hash__ = None  # type: ignore[assignment]


def pack(header: IRHeader | Sequence[Any], payload: bytes = b"") -> bytes:
    """Exactly ``mx.recordio.pack``: 24-byte header, then float32 labels when the label is an array, then payload."""
    _flag, label, id_, id2 = header if not isinstance(header, IRHeader) else dataclasses.astuple(header)
    if isinstance(label, numbers.Number) or (isinstance(label, np.ndarray) and label.ndim == 0):
        head = struct.pack(IR_FORMAT, 0, float(label), int(id_), int(id2))
        return head + bytes(payload)
    arr = np.asarray(label, dtype="<f4")
    head = struct.pack(IR_FORMAT, arr.size, 0.0, int(id_), int(id2))
    return head + arr.tobytes() + bytes(payload)


def unpack(payload: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """Exactly ``mx.recordio.unpack``: split a record payload into its IRHeader and the rest (usually an image).

    ``where`` names the file and record for error messages.
    """
    if len(payload) < IR_SIZE:
        raise DataError(f"{where}: the record holds {len(payload)} bytes, fewer than the {IR_SIZE}-byte IRHeader. "
                        "This is not an mx.recordio.pack record; the file may be a raw RecordIO file.")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, payload)
    rest = payload[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise DataError(f"{where}: the IRHeader announces {flag} float32 labels ({4 * flag} bytes) but only "
                            f"{len(rest)} bytes follow it. The record is corrupt.")
        arr = np.frombuffer(rest, dtype="<f4", count=flag).astype(np.float32)
        arr.setflags(write=False)
        return IRHeader(int(flag), arr, int(id_), int(id2)), bytes(rest[4 * flag:])
    return IRHeader(0, float(label), int(id_), int(id2)), bytes(rest)


def pack_img(header: IRHeader | Sequence[Any], rgb: np.ndarray, quality: int = 95, fmt: str = ".jpg") -> bytes:
    """Like ``mx.recordio.pack_img`` but takes an **RGB** array (mxnet's takes BGR) and encodes with Pillow."""
    return pack(header, encode_image(rgb, quality=quality, fmt=fmt))


# ---------------------------------------------------------------------------------------------------------------------
# The property file and InsightFace training folders
# ---------------------------------------------------------------------------------------------------------------------

def read_property(path: PathLike) -> tuple[int, int, int]:
    """``(num_classes, height, width)`` from an InsightFace ``property`` file (first line ``10572,112,112``)."""
    path = pathlib.Path(path)
    try:
        first = path.read_text(encoding="utf-8").splitlines()[:1]
    except FileNotFoundError:
        raise DataError(f"{path}: property file not found. Write one with lrfr_plugins.formats.write_property "
                        "(first line 'num_classes,height,width').") from None
    fields = first[0].strip().split(",") if first else []
    try:
        vals = tuple(int(v) for v in fields)
        if len(vals) != 3 or min(vals) <= 0:
            raise ValueError
    except ValueError:
        raise DataError(f"{path}: line 1 is {first[0] if first else ''!r}; expected 'num_classes,height,width' "
                        "with three positive integers, e.g. '10572,112,112'.") from None
    return vals  # type: ignore[return-value]


def write_property(path: PathLike, num_classes: int, height: int = 112, width: int = 112) -> None:
    """Write a ``property`` file (``num_classes,height,width``) atomically."""
    atomic_write_text(pathlib.Path(path), f"{int(num_classes)},{int(height)},{int(width)}\n")


def _as_key(value: float, where: str, what: str) -> int:
    if not np.isfinite(value) or value != int(value) or value < 0:
        raise DataError(f"{where}: {what} is {value!r}, not a non-negative integer. The meta-header is corrupt.")
    if value > 2 ** 24:
        raise DataError(f"{where}: {what} is {value:.0f}, above 2**24 where float32 labels stop being exact "
                        "integers; this reader cannot trust the key range. Read the keys from the .idx instead.")
    return int(value)


class TrainingSet:
    """An InsightFace training folder (``train.rec``, ``train.idx``, ``property``), read as arcface_torch does.

    * If record 0 has ``flag > 0`` it is the face2rec2 meta-header ``[N+1, N+1+num_ids]``: images are keys
      ``1..N`` and keys ``N+1 ..`` hold one identity range ``[start, end)`` each.
    * Otherwise (RecBuilder, im2rec) every key in the ``.idx`` is an image.

    ``num_classes`` comes from ``property``; when record 0 is a meta-header the two must agree. Without a property
    file it falls back to the meta-header, else ``None``.
    ``ts[i]`` returns ``(rgb uint8 HWC array, int label)`` for the i-th image; the label is ``header.label`` or
    ``label[0]`` when the record stores an array.
    """

    def __init__(self, root: PathLike, rec: str = "train.rec", idx: str = "train.idx", prop: str = "property"):
        self.root = pathlib.Path(root)
        self.reader = RecordReader(self.root / rec, self.root / idx)
        where = f"{self.reader.rec_path}: record key 0"
        self.meta: IRHeader | None = None
        self.identity_keys: range | None = None
        if 0 in self.reader:
            h0, _ = self.reader.read_record(0)
            if h0.flag > 0:
                if h0.flag < 2:
                    raise DataError(f"{where}: meta-header with flag {h0.flag}; face2rec2 writes 2 labels "
                                    "[N+1, N+1+num_ids]. The pack is not in InsightFace layout.")
                self.meta = h0
        if self.meta is not None:
            end_img = _as_key(float(self.meta.label[0]), where, "label[0] (one past the last image key)")
            end_id = _as_key(float(self.meta.label[1]), where, "label[1] (one past the last identity key)")
            if end_id < end_img:
                raise DataError(f"{where}: meta-header range [{end_img}, {end_id}) is reversed. The pack is corrupt.")
            self.image_keys: Sequence[int] = range(1, end_img)
            self.identity_keys = range(end_img, end_id)
            needed = np.arange(1, end_id, dtype=np.int64)
            missing = needed[~np.isin(needed, self.reader.keys)]
            if missing.size:
                raise DataError(f"{where}: the meta-header announces keys 1..{end_id - 1} but "
                                f"{self.reader.idx_path} lacks {missing.size} of them (first: {int(missing[0])}). "
                                "The .idx is truncated or belongs to another pack: rebuild it with: "
                                f"{rebuild_index_command(self.reader.rec_path, self.reader.idx_path)}.")
        else:
            self.image_keys = [int(k) for k in self.reader.keys]
        prop_path = self.root / prop
        self.property = read_property(prop_path) if prop_path.exists() else None
        meta_classes = len(self.identity_keys) if self.identity_keys is not None else None
        if self.property is not None:
            self.num_classes: int | None = self.property[0]
            if meta_classes is not None and meta_classes != self.num_classes:
                raise DataError(f"{prop_path}: num_classes is {self.num_classes} but record 0 of "
                                f"{self.reader.rec_path} announces {meta_classes} identities. One of the files "
                                "belongs to another pack; re-download the folder.")
        else:
            self.num_classes = meta_classes

    def __len__(self) -> int:
        return len(self.image_keys)

    def read(self, i: int) -> tuple[IRHeader, bytes]:
        """IRHeader and encoded image of the i-th image record."""
        return self.reader.read_record(self.image_keys[i])

    def label_of(self, header: IRHeader, key: int) -> int:
        value = float(header.label) if header.flag == 0 else float(header.label[0])
        where = f"{self.reader.rec_path}: record key {key}"
        if not np.isfinite(value) or value != int(value) or value < 0:
            raise DataError(f"{where}: class label {value!r} is not a non-negative integer.")
        if self.num_classes is not None and value >= self.num_classes:
            raise DataError(f"{where}: class label {int(value)} is not below num_classes={self.num_classes}. "
                            "The property file does not belong to this pack.")
        return int(value)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.get(i)

    def get(self, i: int, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """``ts[i]``, decoding into ``out`` when the image fits it (see :func:`decode_image`)."""
        key = self.image_keys[i]
        header, img = self.reader.read_record(key)
        where = f"{self.reader.rec_path}: record key {key}"
        return decode_image(img, where=where, out=out), self.label_of(header, key)

    def identity_range(self, k: int) -> tuple[int, int]:
        """Half-open image-key range ``[start, end)`` of identity ``k`` (face2rec2 packs only)."""
        if self.identity_keys is None:
            raise DataError(f"{self.reader.rec_path}: record 0 is not a face2rec2 meta-header, so the pack holds no "
                            "identity-range records.")
        key = self.identity_keys[k]
        h, _ = self.reader.read_record(key)
        where = f"{self.reader.rec_path}: record key {key}"
        if h.flag < 2:
            raise DataError(f"{where}: identity record has flag {h.flag}, expected 2 labels [start, end).")
        return (_as_key(float(h.label[0]), where, "label[0]"), _as_key(float(h.label[1]), where, "label[1]"))

    def close(self) -> None:
        self.reader.close()
