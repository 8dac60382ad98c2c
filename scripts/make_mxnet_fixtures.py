#!/usr/bin/env python3
"""Make the mxnet 1.9.1 reference fixtures under ``tests/fixtures/mxnet/``, and check our writer's files with mxnet.

mxnet 1.9.1 needs numpy < 1.24, so it lives in its own virtualenv outside the repo::

    python3 -m venv /tmp/mxvenv
    /tmp/mxvenv/bin/pip install mxnet==1.9.1 "numpy<1.24" opencv-python-headless

Modes (run from the repo root):

``make`` (mxnet python)
    ``/tmp/mxvenv/bin/python scripts/make_mxnet_fixtures.py make``
    writes, with ``MXIndexedRecordIO`` / ``recordio.pack`` / ``pack_img`` / cv2:

    * ``faces_tiny/{train.rec,train.idx,property}``: a face2rec2-style pack, 3 identities x 2 images (112x112
      synthetic JPEGs), record 0 meta-header ``[7, 10]`` written *last* (so the .idx is not in key order), identity
      records 7..9, scalar labels (``flag=0``) and array labels (``flag=2``), and key 5 whose JPEG carries a COM
      segment with the magic word at aligned payload offsets 32, 36 and 44 (and one unaligned copy) so mxnet writes
      it as a 4-part record (cflags 1, 2, 2, 3);
    * ``raw/records.{rec,idx}``: raw payloads covering every framing edge case (empty, 1-7 bytes, magic at the start,
      end, twice in a row, unaligned) plus packed IRHeaders with float labels and large ids;
    * ``verification/tiny_py3.bin`` (``pickle.dump(..., protocol=HIGHEST_PROTOCOL)``) and ``tiny_py2.bin``
      (hand-written Python 2 protocol-2 opcodes: ``str`` blobs, memo puts), 4 pairs each;
    * ``expected.json``: headers, payload hashes and the images as decoded by ``mx.image.imdecode`` (RGB) and by
      ``cv2.imdecode`` (BGR, swapped), by sha256 of the pixel bytes plus a few sample pixels.

``write-ours OUTDIR`` (project python, ``python3 scripts/make_mxnet_fixtures.py write-ours /tmp/ours``)
    writes the same raw records and faces_tiny pack with *our* ``RecordWriter``, a fresh pack encoded with our
    ``pack_img`` (Pillow), and our ``write_verification_bin`` output.

``verify-ours OUTDIR`` (mxnet python)
    reads those files with mxnet (``MXIndexedRecordIO.read_idx``, ``recordio.unpack``, ``mx.image.imdecode``,
    ``pickle.load(encoding='bytes')`` as arcface_torch's ``load_bin``) and checks every payload, header and image,
    and that our ``.rec``/``.idx`` are byte-identical to mxnet's for the same records.

Last run (2 CPU sandbox, Python 3.11.7, mxnet 1.9.1, numpy 1.23.5, opencv-python-headless 4.11):
``make`` then ``write-ours /tmp/ours`` then ``verify-ours /tmp/ours`` -> "verify-ours: all checks passed"
(see the end of this file's ``verify_ours`` for the list of checks). Re-run the three commands after changing the
fixtures; ``tests/test_formats_recordio.py`` reads them without mxnet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import pickle
import struct
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "mxnet"
MAGIC_BYTES = struct.pack("<I", 0xCED7230A)

N_IDS, PER_ID = 3, 2
MAGIC_KEY = 5  # the image record whose JPEG holds aligned magic words


def sha(b: bytes) -> str:
    return hashlib.sha256(bytes(b)).hexdigest()


def synthetic_bgr(seed: int, size: int = 112) -> np.ndarray:
    """A smooth face-sized image (gradients + an ellipse) that compresses to a few KB."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rng = np.random.RandomState(seed)
    a, b, c = rng.uniform(0.2, 0.8, 3)
    img = np.stack([255 * (a * x + (1 - a) * y), 255 * (b * (1 - x) + (1 - b) * y), 255 * c * np.ones_like(x)], -1)
    cy, cx, ry, rx = 0.5 + 0.05 * rng.randn(), 0.5 + 0.05 * rng.randn(), 0.32, 0.25
    mask = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
    img[mask] = img[mask] * 0.4 + 150
    return np.clip(img, 0, 255).astype(np.uint8)  # channel order is arbitrary synthetic content; treated as BGR


def raw_payloads() -> list[bytes]:
    """Payloads that exercise every framing edge case of dmlc RecordIO."""
    m = MAGIC_BYTES
    return [
        b"",
        b"a", b"ab", b"abc", b"abcd", b"abcde", b"abcdef", b"abcdefg",
        m,                                   # magic only -> parts (1, len 0), (3, len 0)
        m + m,                               # two in a row -> a zero-length middle part
        b"head" + m + b"tail!",             # aligned magic in the middle
        b"xyz" + m + b"q",                   # unaligned magic: no split
        b"abcd" + m,                         # magic at the very end: last part is empty
        b"ab" + m + b"cd" + m,               # unaligned, then aligned at 8? (offset 8 is aligned: split)
        m + b"12" + m + b"3456" + m + b"7",  # aligned, unaligned, aligned
        bytes(range(256)) * 3,
    ]


def packed_headers(mx) -> list[tuple[tuple, bytes]]:
    """(IRHeader args, trailing bytes) packed with mx.recordio.pack: float labels, large ids, empty payloads."""
    return [
        ((0, 2.5, 1, 0), b""),
        ((0, -3.0, 2 ** 40 + 5, 7), b"payload"),
        ((0, [0.5, -1.25, 1.0e6], 3, 4), b""),
        ((0, [7.0, 10.0], 0, 0), b"\xff\xd8\xff" + MAGIC_BYTES + b"xx"),   # flag=2: labels then bytes with magic
        ((0, np.arange(5, dtype=np.float32), 2 ** 63, 2 ** 64 - 1), b"abc"),
    ]


def magic_jpeg(cv2, img_bgr: np.ndarray, header_size: int) -> bytes:
    """A valid JPEG with a COM segment putting the magic word at aligned payload offsets (after a header)."""
    ok, enc = cv2.imencode(".jpg", img_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    jpg = enc.tobytes()
    # COM segment right after SOI: FF FE len_hi len_lo data; data starts at jpeg offset 6.
    start = header_size + 6
    lead = (-start) % 4
    data = b"\0" * lead + MAGIC_BYTES + MAGIC_BYTES + b"lrfr" + MAGIC_BYTES + b"!" + MAGIC_BYTES + b"..."
    seg = b"\xff\xfe" + struct.pack(">H", len(data) + 2) + data
    return jpg[:2] + seg + jpg[2:]


def py2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2's ``pickle.dump((bins, issame), f, protocol=2)`` writes (cPickle, with memo puts)."""
    out = bytearray(b"\x80\x02")
    memo = 0

    def put():
        nonlocal memo
        out.extend(b"q" + bytes([memo]))
        memo += 1

    out.extend(b"]"); put(); out.extend(b"(")
    for b in bins:
        out.extend((b"U" + bytes([len(b)])) if len(b) < 256 else (b"T" + struct.pack("<i", len(b))))
        out.extend(b); put()
    out.extend(b"e")
    out.extend(b"]"); put(); out.extend(b"(")
    for s in issame:
        out.extend(b"\x88" if s else b"\x89")
    out.extend(b"e")
    out.extend(b"\x86"); put(); out.extend(b".")
    return bytes(out)


def decoded_summary(rgb: np.ndarray) -> dict:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    pts = [(0, 0), (56, 56), (111, 111), (20, 90), (90, 20)]
    return {"shape": list(rgb.shape), "sha256": sha(rgb.tobytes()),
            "samples": [[y, x, [int(v) for v in rgb[y, x]]] for y, x in pts if y < rgb.shape[0] and x < rgb.shape[1]],
            "mean": [float(v) for v in rgb.reshape(-1, 3).mean(0)]}


def header_json(h) -> dict:
    lab = h.label
    return {"flag": int(h.flag), "label": [float(v) for v in np.asarray(lab).ravel()] if h.flag > 0 else float(lab),
            "id": int(h.id), "id2": int(h.id2)}


# ---------------------------------------------------------------------------------------------------------------------

def make(out: pathlib.Path) -> None:
    import cv2
    import mxnet as mx

    out.mkdir(parents=True, exist_ok=True)
    expected: dict = {"mxnet": mx.__version__, "numpy": np.__version__, "cv2": cv2.__version__}

    # --- raw framing cases -------------------------------------------------------------------------------------
    raw = out / "raw"
    raw.mkdir(exist_ok=True)
    payloads = raw_payloads() + [mx.recordio.pack(mx.recordio.IRHeader(*a), s) for a, s in packed_headers(mx)]
    w = mx.recordio.MXIndexedRecordIO(str(raw / "records.idx"), str(raw / "records.rec"), "w")
    for k, p in enumerate(payloads):
        w.write_idx(k, p)
    w.close()
    n_raw = len(raw_payloads())
    r = mx.recordio.MXIndexedRecordIO(str(raw / "records.idx"), str(raw / "records.rec"), "r")
    assert [r.read_idx(k) for k in range(len(payloads))] == payloads
    expected["raw"] = {"payloads_hex": [p.hex() for p in payloads],
                       "headers": {str(n_raw + i): {**header_json(mx.recordio.unpack(payloads[n_raw + i])[0]),
                                                    "rest_hex": mx.recordio.unpack(payloads[n_raw + i])[1].hex()}
                                   for i in range(len(payloads) - n_raw)}}
    r.close()

    # --- faces_tiny: face2rec2-style pack ---------------------------------------------------------------------
    ft = out / "faces_tiny"
    ft.mkdir(exist_ok=True)
    w = mx.recordio.MXIndexedRecordIO(str(ft / "train.idx"), str(ft / "train.rec"), "w")
    images = {}
    key = 1
    ranges = []
    for cls in range(N_IDS):
        start = key
        for j in range(PER_ID):
            bgr = synthetic_bgr(10 * cls + j)
            if key == MAGIC_KEY:
                s = mx.recordio.pack(mx.recordio.IRHeader(0, float(cls), key, 0), magic_jpeg(cv2, bgr, 24))
            elif cls == 1 or key == 6:  # face2rec2 style: array label [class, aligned]
                s = mx.recordio.pack_img(mx.recordio.IRHeader(0, [float(cls), 1.0], key, 0), bgr, quality=95)
            else:  # CASIA style: scalar label
                s = mx.recordio.pack_img(mx.recordio.IRHeader(0, float(cls), key, 0), bgr, quality=95)
            w.write_idx(key, s)
            images[key] = s
            key += 1
        ranges.append((start, key))
    end_img = key
    for cls, (a, b) in enumerate(ranges):
        w.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, [float(a), float(b)], key, 0), b""))
        key += 1
    end_id = key
    w.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, [float(end_img), float(end_id)], 0, 0), b""))
    w.close()
    (ft / "property").write_text(f"{N_IDS},112,112\n")

    rec_bytes = (ft / "train.rec").read_bytes()
    r = mx.recordio.MXIndexedRecordIO(str(ft / "train.idx"), str(ft / "train.rec"), "r")
    recs = {}
    for k in r.keys:
        payload = r.read_idx(k)
        h, img = mx.recordio.unpack(payload)
        entry = {"header": header_json(h), "payload_len": len(payload), "payload_sha256": sha(payload),
                 "offset": int(r.idx[k])}
        if img:
            mx_rgb = mx.image.imdecode(img).asnumpy()
            cv_rgb = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            entry["image_sha256"] = sha(img)
            entry["mx_imdecode_rgb"] = decoded_summary(mx_rgb)
            entry["cv2_imdecode_rgb"] = decoded_summary(cv_rgb)
            entry["mx_equals_cv2"] = bool(np.array_equal(mx_rgb, cv_rgb))
        recs[str(k)] = entry
    r.close()
    # count the parts mxnet wrote for the magic record
    off = recs[str(MAGIC_KEY)]["offset"]
    cflags = []
    while True:
        magic, lrec = struct.unpack_from("<II", rec_bytes, off)
        assert magic == 0xCED7230A
        cflags.append(lrec >> 29)
        off += 8 + ((lrec & (2 ** 29 - 1)) + 3) // 4 * 4
        if cflags[-1] in (0, 3):
            break
    expected["faces_tiny"] = {"num_classes": N_IDS, "image_keys": list(range(1, end_img)),
                              "identity_ranges": [list(x) for x in ranges], "meta_label": [end_img, end_id],
                              "magic_key": MAGIC_KEY, "magic_key_cflags": cflags,
                              "key_order_in_idx": [int(k) for k in
                                                   (ln.split("\t")[0] for ln in
                                                    (ft / "train.idx").read_text().splitlines())],
                              "records": recs}

    # --- verification .bin ---------------------------------------------------------------------------------------
    vb = out / "verification"
    vb.mkdir(exist_ok=True)
    bins = []
    for i in range(8):
        _, enc = cv2.imencode(".jpg", synthetic_bgr(100 + i), [cv2.IMWRITE_JPEG_QUALITY, 75])
        bins.append(enc.tobytes())
    issame = [True, False, True, False]
    with open(vb / "tiny_py3.bin", "wb") as f:
        pickle.dump((bins, issame), f, protocol=pickle.HIGHEST_PROTOCOL)
    (vb / "tiny_py2.bin").write_bytes(py2_pickle(bins, issame))
    # what arcface_torch's load_bin does
    for name in ("tiny_py3.bin", "tiny_py2.bin"):
        with open(vb / name, "rb") as f:
            b2, s2 = pickle.load(f, encoding="bytes")
        assert b2 == bins and s2 == issame, name
    try:
        with open(vb / "tiny_py2.bin", "rb") as f:
            pickle.load(f)
        py2_plain = "loaded"
    except UnicodeDecodeError as exc:
        py2_plain = f"UnicodeDecodeError: {exc}"
    expected["verification"] = {
        "issame": issame, "bins_sha256": [sha(b) for b in bins],
        "py2_plain_pickle_load": py2_plain,
        "mx_imdecode_rgb": [decoded_summary(mx.image.imdecode(b).asnumpy()) for b in bins],
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"make: wrote {out} ({total} bytes); magic record cflags {cflags}")


def write_ours(outdir: pathlib.Path) -> None:
    sys.path.insert(0, str(ROOT))
    from lrfr_plugins.formats import (
        IRHeader,
        RecordReader,
        RecordWriter,
        load_verification_bin,
        pack,
        pack_img,
        unpack,
        write_property,
        write_verification_bin,
    )

    outdir.mkdir(parents=True, exist_ok=True)
    expected = json.loads((FIXTURES / "expected.json").read_text())
    payloads = [bytes.fromhex(h) for h in expected["raw"]["payloads_hex"]]
    with RecordWriter(outdir / "raw.rec", outdir / "raw.idx") as w:
        for k, p in enumerate(payloads):
            w.write(p, key=k)
    # faces_tiny re-written record by record in mxnet's key order, re-packed through our unpack/pack
    src = RecordReader(FIXTURES / "faces_tiny" / "train.rec", FIXTURES / "faces_tiny" / "train.idx")
    (outdir / "faces_tiny").mkdir(exist_ok=True)
    with RecordWriter(outdir / "faces_tiny" / "train.rec", outdir / "faces_tiny" / "train.idx") as w:
        for k in src.keys:
            h, rest = unpack(src.read(int(k)))
            w.write(pack(h if h.flag == 0 else IRHeader(0, list(h.label), h.id, h.id2), rest), key=int(k))
    # a fresh pack encoded by us (Pillow JPEG), face2rec2 layout, 2 ids x 2 images
    (outdir / "ours_pack").mkdir(exist_ok=True)
    with RecordWriter(outdir / "ours_pack" / "train.rec") as w:
        key = 1
        for cls in range(2):
            for j in range(2):
                rgb = synthetic_bgr(50 + 10 * cls + j)[:, :, ::-1]
                label = float(cls) if j == 0 else [float(cls), 1.0]
                w.write(pack_img(IRHeader(0, label, key, 0), rgb), key=key)
                key += 1
        w.write(pack(IRHeader(0, [1.0, 3.0], 5, 0)), key=5)
        w.write(pack(IRHeader(0, [3.0, 5.0], 6, 0)), key=6)
        w.write(pack(IRHeader(0, [5.0, 7.0], 0, 0)), key=0)
    write_property(outdir / "ours_pack" / "property", 2)
    vb = load_verification_bin(FIXTURES / "verification" / "tiny_py2.bin")
    write_verification_bin(outdir / "ours.bin", vb.bins, vb.issame)
    print(f"write-ours: wrote {outdir}")


def verify_ours(outdir: pathlib.Path) -> None:
    import mxnet as mx

    expected = json.loads((FIXTURES / "expected.json").read_text())
    checks = []
    payloads = [bytes.fromhex(h) for h in expected["raw"]["payloads_hex"]]
    r = mx.recordio.MXIndexedRecordIO(str(outdir / "raw.idx"), str(outdir / "raw.rec"), "r")
    assert [r.read_idx(k) for k in range(len(payloads))] == payloads
    r.close()
    r = mx.recordio.MXRecordIO(str(outdir / "raw.rec"), "r")  # sequential read too
    seq = []
    while True:
        item = r.read()
        if item is None:
            break
        seq.append(item)
    assert seq == payloads, "sequential read"
    checks.append(f"mxnet reads our raw.rec ({len(payloads)} records, by idx and sequentially)")
    for ext in ("rec", "idx"):
        assert (outdir / f"raw.{ext}").read_bytes() == (FIXTURES / "raw" / f"records.{ext}").read_bytes(), ext
    checks.append("our raw.rec/.idx are byte-identical to mxnet's")
    for name in ("train.rec", "train.idx"):
        assert (outdir / "faces_tiny" / name).read_bytes() == (FIXTURES / "faces_tiny" / name).read_bytes(), name
    checks.append("our re-packed faces_tiny train.rec/.idx are byte-identical to mxnet's (incl. the 4-part record)")
    r = mx.recordio.MXIndexedRecordIO(str(outdir / "ours_pack" / "train.idx"), str(outdir / "ours_pack" / "train.rec"),
                                      "r")
    h0, _ = mx.recordio.unpack(r.read_idx(0))
    assert h0.flag == 2 and list(h0.label) == [5.0, 7.0], h0
    labels = []
    for k in range(1, 5):
        h, img = mx.recordio.unpack(r.read_idx(k))
        lab = h.label if h.flag == 0 else h.label[0]
        labels.append(int(lab))
        rgb = mx.image.imdecode(img).asnumpy()
        ref = synthetic_bgr(50 + 10 * ((k - 1) // 2) + (k - 1) % 2)[:, :, ::-1].astype(int)
        assert rgb.shape == (112, 112, 3), rgb.shape
        assert np.abs(rgb.astype(int) - ref).mean() < 3, np.abs(rgb.astype(int) - ref).mean()
    assert labels == [0, 0, 1, 1], labels
    assert [list(mx.recordio.unpack(r.read_idx(k))[0].label) for k in (5, 6)] == [[1.0, 3.0], [3.0, 5.0]]
    r.close()
    checks.append("mxnet reads our pack_img pack: meta-header, labels, identity ranges, images decode (RGB) close "
                  "to the source")
    with open(outdir / "ours.bin", "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")
    assert issame == expected["verification"]["issame"]
    assert [sha(b) for b in bins] == expected["verification"]["bins_sha256"]
    for b, ref in zip(bins, expected["verification"]["mx_imdecode_rgb"]):
        assert sha(mx.image.imdecode(b).asnumpy().tobytes()) == ref["sha256"]
    checks.append("arcface_torch-style pickle.load(encoding='bytes') + mx.image.imdecode reads our .bin")
    print("verify-ours: all checks passed:\n  " + "\n  ".join(checks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", type=pathlib.Path, default=FIXTURES)
    for name in ("write-ours", "verify-ours"):
        p = sub.add_parser(name)
        p.add_argument("outdir", type=pathlib.Path)
    args = ap.parse_args()
    if args.mode == "make":
        make(args.out)
    elif args.mode == "write-ours":
        write_ours(args.outdir)
    else:
        verify_ours(args.outdir)


if __name__ == "__main__":
    main()
