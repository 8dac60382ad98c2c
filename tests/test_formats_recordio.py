"""dmlc RecordIO / IRHeader / InsightFace training folders, checked against files written by mxnet 1.9.1.

The fixtures under tests/fixtures/mxnet/ come from scripts/make_mxnet_fixtures.py (see its docstring).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import random
import shutil
import struct

import numpy as np
import pytest

from lrfr_plugins.errors import DataError
from lrfr_plugins.formats import (
    IRHeader,
    RecordReader,
    RecordWriter,
    TrainingSet,
    decode_image,
    pack,
    pack_img,
    read_property,
    rebuild_index,
    unpack,
    write_property,
)
from lrfr_plugins.formats.recordio import MAGIC_BYTES, encode_record

FIX = pathlib.Path(__file__).parent / "fixtures" / "mxnet"
EXPECTED = json.loads((FIX / "expected.json").read_text())
RAW = [bytes.fromhex(h) for h in EXPECTED["raw"]["payloads_hex"]]


def sha(b: bytes) -> str:
    return hashlib.sha256(bytes(b)).hexdigest()


def assert_decoded_like(rgb: np.ndarray, ref: dict) -> None:
    """Exact match with mxnet's decoder (expected); tolerate 1-level JPEG-decoder differences on other builds."""
    assert list(rgb.shape) == ref["shape"]
    if sha(rgb.tobytes()) == ref["sha256"]:
        return
    for y, x, px in ref["samples"]:  # pragma: no cover - only on a Pillow with another libjpeg
        assert np.abs(rgb[y, x].astype(int) - px).max() <= 2
    assert np.allclose(rgb.reshape(-1, 3).mean(0), ref["mean"], atol=0.5)  # pragma: no cover


def copy_fixture(tmp_path: pathlib.Path, sub: str) -> pathlib.Path:
    dst = tmp_path / sub
    shutil.copytree(FIX / sub, dst)
    return dst


# --------------------------------------------------------------------------------------------------------------------
# Reading mxnet's files
# --------------------------------------------------------------------------------------------------------------------

def test_reads_mxnet_raw_records_by_index_and_by_scan(tmp_path):
    with RecordReader(FIX / "raw" / "records.rec", FIX / "raw" / "records.idx") as r:
        assert len(r) == len(RAW)
        assert list(r.keys) == list(range(len(RAW)))
        assert [r.read(k) for k in r.keys] == RAW
        assert [p for _, p in r.items()] == RAW
    # without an .idx the file is scanned, keys 0..n-1 in file order
    rec = tmp_path / "records.rec"
    shutil.copy(FIX / "raw" / "records.rec", rec)
    r = RecordReader(rec)
    assert r.idx_path is None and [r.read(k) for k in range(len(r))] == RAW


def test_sibling_idx_is_found_and_rebuild_index_matches_mxnet(tmp_path):
    d = copy_fixture(tmp_path, "raw")
    assert RecordReader(d / "records.rec").idx_path == d / "records.idx"
    (d / "records.idx").unlink()
    assert rebuild_index(d / "records.rec") == len(RAW)
    assert (d / "records.idx").read_bytes() == (FIX / "raw" / "records.idx").read_bytes()


def test_rebuild_index_restores_face2rec2_keys_from_the_header_ids(tmp_path):
    d = copy_fixture(tmp_path, "faces_tiny")  # mxnet wrote record 0 after the images: file order is not key order
    (d / "train.idx").unlink()
    assert rebuild_index(d / "train.rec") == 10
    assert (d / "train.idx").read_bytes() == (FIX / "faces_tiny" / "train.idx").read_bytes()


def test_unpack_matches_mxnet_headers():
    for key, ref in EXPECTED["raw"]["headers"].items():
        h, rest = unpack(RAW[int(key)])
        assert h.flag == ref["flag"] and h.id == ref["id"] and h.id2 == ref["id2"]
        if h.flag:
            assert h.label.dtype == np.float32 and list(h.label) == ref["label"]
        else:
            assert isinstance(h.label, float) and h.label == ref["label"]
        assert rest.hex() == ref["rest_hex"]
        # pack is mxnet's pack: re-packing gives mxnet's bytes back
        assert pack(h if h.flag == 0 else IRHeader(0, h.label, h.id, h.id2), rest) == RAW[int(key)]


def test_training_set_matches_mxnet():
    ref = EXPECTED["faces_tiny"]
    ts = TrainingSet(FIX / "faces_tiny")
    assert ts.num_classes == ref["num_classes"] == read_property(FIX / "faces_tiny" / "property")[0]
    assert list(ts.image_keys) == ref["image_keys"] and len(ts) == len(ref["image_keys"])
    assert [list(ts.identity_range(k)) for k in range(ts.num_classes)] == ref["identity_ranges"]
    assert list(ts.meta.label) == ref["meta_label"]
    assert list(ts.reader.keys) == ref["key_order_in_idx"]  # record 0 written last: .idx not in key order
    for i, key in enumerate(ts.image_keys):
        r = ref["records"][str(key)]
        h, img = ts.read(i)
        assert h.flag == r["header"]["flag"] and h.id == r["header"]["id"]
        assert sha(img) == r["image_sha256"]
        rgb, label = ts[i]
        assert label == int(np.atleast_1d(r["header"]["label"])[0])
        assert rgb.dtype == np.uint8
        assert_decoded_like(rgb, r["mx_imdecode_rgb"])
    for key, r in ref["records"].items():
        payload = ts.reader.read(int(key))
        assert len(payload) == r["payload_len"] and sha(payload) == r["payload_sha256"]
        assert ts.reader.offset(int(key)) == r["offset"]


def test_multipart_record_from_mxnet():
    ref = EXPECTED["faces_tiny"]
    key = ref["magic_key"]
    rec = (FIX / "faces_tiny" / "train.rec").read_bytes()
    off = ref["records"][str(key)]["offset"]
    assert ref["magic_key_cflags"] == [1, 2, 2, 3]
    assert struct.unpack_from("<II", rec, off)[1] >> 29 == 1  # really split on disk
    payload = RecordReader(FIX / "faces_tiny" / "train.rec", FIX / "faces_tiny" / "train.idx").read(key)
    assert payload.count(MAGIC_BYTES) == 4 and payload[32:36] == MAGIC_BYTES
    assert sha(payload) == ref["records"][str(key)]["payload_sha256"]


# --------------------------------------------------------------------------------------------------------------------
# Writing: byte-identical to mxnet, round trips
# --------------------------------------------------------------------------------------------------------------------

def test_writer_bytes_equal_mxnet(tmp_path):
    with RecordWriter(tmp_path / "r.rec", tmp_path / "r.idx") as w:
        for k, p in enumerate(RAW):
            assert w.write(p, key=k) == RecordReader(FIX / "raw" / "records.rec").offset(k)
    assert (tmp_path / "r.rec").read_bytes() == (FIX / "raw" / "records.rec").read_bytes()
    assert (tmp_path / "r.idx").read_bytes() == (FIX / "raw" / "records.idx").read_bytes()

    src = RecordReader(FIX / "faces_tiny" / "train.rec", FIX / "faces_tiny" / "train.idx")
    with RecordWriter(tmp_path / "train.rec") as w:
        for k in src.keys:
            w.write(src.read(int(k)), key=int(k))
    assert (tmp_path / "train.rec").read_bytes() == (FIX / "faces_tiny" / "train.rec").read_bytes()
    assert (tmp_path / "train.idx").read_bytes() == (FIX / "faces_tiny" / "train.idx").read_bytes()


def test_encode_record_layout():
    m = MAGIC_BYTES
    assert encode_record(b"") == m + b"\0\0\0\0"
    assert encode_record(b"abcde") == m + struct.pack("<I", 5) + b"abcde\0\0\0"
    # two aligned magics: (1, len 0), (2, len 0), (3, len 2) + padding
    assert encode_record(m + m + b"xy") == (m + struct.pack("<I", 1 << 29) + m + struct.pack("<I", 2 << 29)
                                             + m + struct.pack("<I", 3 << 29 | 2) + b"xy\0\0")
    assert encode_record(b"x" + m + b"yzw") == m + struct.pack("<I", 8) + b"x" + m + b"yzw"  # unaligned: no split


def test_round_trip_random_payloads(tmp_path):
    rnd = random.Random(0)
    payloads = [b"", MAGIC_BYTES, MAGIC_BYTES * 5]
    for _ in range(200):
        n = rnd.randrange(0, 64)
        p = bytearray(rnd.randbytes(n))
        for _ in range(rnd.randrange(0, 4)):  # inject magic words at aligned and unaligned places
            if len(p) >= 4:
                i = rnd.randrange(0, len(p) - 3)
                p[i:i + 4] = MAGIC_BYTES
        payloads.append(bytes(p))
    keys = rnd.sample(range(10_000), len(payloads))  # not contiguous, not sorted
    with RecordWriter(tmp_path / "x.rec") as w:
        for k, p in zip(keys, payloads):
            w.write(p, key=k)
    r = RecordReader(tmp_path / "x.rec")
    assert list(r.keys) == keys and all(r.read(k) == p for k, p in zip(keys, payloads))
    assert 10_001 not in r and keys[0] in r
    with pytest.raises(KeyError):
        r.read(10_001)
    r2 = pickle.loads(pickle.dumps(r))  # DataLoader workers with spawn
    assert r2.read(keys[5]) == payloads[5]


def test_ir_header_round_trip_float_labels_and_empty_payload():
    for header, rest in [(IRHeader(0, 3.0, 7, 0), b"img"), (IRHeader(0, [0.25, -2.5, 1e6], 2 ** 40, 9), b""),
                         (IRHeader(0, np.array([5.0, 7.0], np.float32), 0, 0), MAGIC_BYTES)]:
        h, r = unpack(pack(header, rest))
        assert r == rest and h.id == header.id and h.id2 == header.id2
        assert np.array_equal(h.labels, np.atleast_1d(np.asarray(header.label, np.float32)))
        assert h.flag == (0 if np.ndim(header.label) == 0 else np.size(header.label))
    assert len(pack(IRHeader(0, 1.0, 0, 0))) == 24
    assert IRHeader(2, np.array([1, 2], np.float32)) == IRHeader(2, np.array([1, 2], np.float32))


def test_pack_img_and_plain_training_set(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [np.clip(rng.normal(128, 20, (112, 112, 3)), 0, 255).astype(np.uint8) for _ in range(3)]
    with RecordWriter(tmp_path / "train.rec") as w:  # RecBuilder layout: key 0 is an image, flag 0
        for k, im in enumerate(imgs):
            w.write(pack_img(IRHeader(0, float(k % 2), k, 0), im, fmt=".png"), key=k)
    write_property(tmp_path / "property", 2)
    ts = TrainingSet(tmp_path)
    assert ts.meta is None and list(ts.image_keys) == [0, 1, 2] and ts.num_classes == 2
    for i, im in enumerate(imgs):
        rgb, label = ts[i]
        assert label == i % 2 and np.array_equal(rgb, im)  # PNG is lossless
    with pytest.raises(DataError, match="identity-range"):
        ts.identity_range(0)


def test_writer_is_atomic(tmp_path):
    target = tmp_path / "t.rec"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), RecordWriter(target) as w:
        w.write(b"new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and not (tmp_path / "t.idx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.rec"]  # no temp files left
    w = RecordWriter(target)
    w.write(b"x")
    w.abort()
    assert target.read_bytes() == b"old"
    with RecordWriter(target) as w:
        w.write(b"x", key=3)
        w.write(b"y")  # next key: 4
        with pytest.raises(ValueError, match="already written"):
            w.write(b"z", key=3)
    assert (tmp_path / "t.idx").read_text() == "3\t0\n4\t12\n"


# --------------------------------------------------------------------------------------------------------------------
# Corrupt input: DataError naming the file and the byte offset / record
# --------------------------------------------------------------------------------------------------------------------

def test_bad_magic(tmp_path):
    d = copy_fixture(tmp_path, "raw")
    rec = d / "records.rec"
    off = RecordReader(rec).offset(5)
    data = bytearray(rec.read_bytes())
    data[off] ^= 0xFF
    rec.write_bytes(bytes(data))
    r = RecordReader(rec, d / "records.idx")
    assert r.read(4) == RAW[4]
    with pytest.raises(DataError, match=rf"records\.rec: record key 5: bad magic .* at byte offset {off}\b"):
        r.read(5)
    (d / "records.idx").unlink()
    with pytest.raises(DataError, match=rf"records\.rec: .*bad magic .* at byte offset {off}\b"):
        RecordReader(rec)


def test_truncated_file_and_length_past_eof(tmp_path):
    d = copy_fixture(tmp_path, "faces_tiny")
    rec = d / "train.rec"
    r0 = RecordReader(rec, d / "train.idx")
    key = 6
    off = r0.offset(key)
    data = rec.read_bytes()
    rec.write_bytes(data[:off + 100])  # cut inside record 6: its length now runs past the end
    (d / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in zip(r0.keys, r0._offsets) if o < off + 100))
    with pytest.raises(DataError, match=rf"train\.rec: the last record the \.idx lists \(byte offset {off}\): the "
                                        rf"record part at byte offset {off} declares \d+ bytes, which runs past the "
                                        r"end of the file \(byte " + str(off + 100)):
        RecordReader(rec, d / "train.idx")  # found on opening, before any training step
    rec.write_bytes(data[:off + 5])  # cut inside the 8-byte header; no .idx: the scan finds it
    (d / "train.idx").unlink()
    with pytest.raises(DataError, match=rf"train\.rec: record #5 \(sequential scan\): the record header at byte "
                                        rf"offset {off} is cut off: the file ends at byte {off + 5}"):
        RecordReader(rec)


def test_truncated_multipart_record(tmp_path):
    d = copy_fixture(tmp_path, "faces_tiny")
    rec = d / "train.rec"
    ref = EXPECTED["faces_tiny"]
    off = ref["records"][str(ref["magic_key"])]["offset"]
    data = rec.read_bytes()
    # keep the first two parts (8+8+8 header bytes, 8 bytes data in part 1, 0 in part 2) and cut the next header
    first_len = struct.unpack_from("<I", data, off + 4)[0] & (2 ** 29 - 1)
    cut = off + 8 + first_len + 8 + 4
    rec.write_bytes(data[:cut])
    (d / "train.idx").write_text(f"{ref['magic_key']}\t{off}\n")
    with pytest.raises(DataError, match=rf"the last record the \.idx lists \(byte offset {off}\): the record header "
                                        rf"at byte offset {off + 8 + first_len + 8} is cut off"):
        RecordReader(rec, d / "train.idx")


def test_idx_pointing_past_eof(tmp_path):
    d = copy_fixture(tmp_path, "raw")
    size = (d / "records.rec").stat().st_size
    lines = (d / "records.idx").read_text().splitlines()
    lines[3] = f"3\t{size + 400}"
    (d / "records.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"records\.idx: line 4: key 3 has byte offset {size + 400}, which points "
                                        r"past the end of .*records\.rec"):
        RecordReader(d / "records.rec", d / "records.idx")


@pytest.mark.parametrize("idx_text, match", [
    ("0\t0\n1\tabc\n", r"line 2: expected 'key<TAB>byte_offset'"),
    ("0\t0\n0\t8\n", r"key 0 appears more than once \(lines \[1, 2\]\)"),
    ("0\t2\n", r"line 1: key 0 has byte offset 2, which is not a multiple of 4"),
])
def test_bad_idx(tmp_path, idx_text, match):
    d = copy_fixture(tmp_path, "raw")
    (d / "records.idx").write_text(idx_text)
    with pytest.raises(DataError, match=r"records\.idx: " + match):
        RecordReader(d / "records.rec", d / "records.idx")


def test_bad_continuation_flag(tmp_path):
    rec = tmp_path / "c.rec"
    rec.write_bytes(MAGIC_BYTES + struct.pack("<I", 2 << 29 | 4) + b"abcd")  # a middle part with no first part
    with pytest.raises(DataError, match=r"c\.rec: record #0 \(sequential scan\): continuation flag 2 "
                                        r"at byte offset 0"):
        RecordReader(rec)
    (tmp_path / "c.idx").write_text("0\t0\n")
    with pytest.raises(DataError, match=r"c\.rec: the last record the \.idx lists \(byte offset 0\): continuation "
                                        r"flag 2 at byte offset 0"):
        RecordReader(rec)


def test_missing_files_and_bad_property(tmp_path):
    with pytest.raises(DataError, match=r"nope\.rec: RecordIO file not found"):
        RecordReader(tmp_path / "nope.rec")
    shutil.copy(FIX / "raw" / "records.rec", tmp_path / "r.rec")
    with pytest.raises(DataError, match=r"missing\.idx: index file not found"):
        RecordReader(tmp_path / "r.rec", tmp_path / "missing.idx")
    (tmp_path / "property").write_text("10572;112;112\n")
    with pytest.raises(DataError, match=r"property: line 1 is '10572;112;112'"):
        read_property(tmp_path / "property")
    with pytest.raises(DataError, match="fewer than the 24-byte IRHeader"):
        unpack(b"abc", where="x.rec: record key 3")
    with pytest.raises(DataError, match=r"x\.rec: record key 3: the IRHeader announces 4 float32 labels"):
        unpack(struct.pack("<IfQQ", 4, 0, 0, 0) + b"abcd", where="x.rec: record key 3")
    with pytest.raises(DataError, match=r"record key 9: cannot decode the image"):
        decode_image(b"\xff\xd8\xffgarbage", where="x.rec: record key 9")


def test_property_must_agree_with_meta_header(tmp_path):
    d = copy_fixture(tmp_path, "faces_tiny")
    write_property(d / "property", 4)
    with pytest.raises(DataError, match=r"property: num_classes is 4 but record 0 of .*train\.rec announces 3"):
        TrainingSet(d)
    (d / "property").unlink()
    assert TrainingSet(d).num_classes == 3  # falls back to the meta-header


def test_a_cut_or_stale_idx_is_refused_instead_of_reading_a_smaller_pack(tmp_path):
    d = copy_fixture(tmp_path, "faces_tiny")
    lines = (d / "train.idx").read_text().splitlines()
    (d / "train.idx").write_text("\n".join(lines[:-3]) + "\n")  # the last three records are no longer listed
    with pytest.raises(DataError, match=rf"train\.idx: lists {len(lines) - 3} records, the last ending at byte \d+, "
                                        r"but .*train\.rec holds \d+ bytes: the \.idx is cut short or older than the "
                                        r"\.rec, and records would be missed. Rebuild it with: lrfr data index"):
        RecordReader(d / "train.rec", d / "train.idx")


def test_a_damaged_middle_record_is_named_by_its_key_when_read(tmp_path):
    d = copy_fixture(tmp_path, "faces_tiny")
    reader = RecordReader(d / "train.rec", d / "train.idx")
    key = int(reader.keys[3])
    data = bytearray((d / "train.rec").read_bytes())
    data[reader.offset(key):reader.offset(key) + 4] = b"XXXX"  # the magic of one record in the middle
    (d / "train.rec").write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"train\.rec: record key {key}: .*byte offset {reader.offset(key)}"):
        RecordReader(d / "train.rec", d / "train.idx").read(key)
