"""Verification .bin files: mxnet-era fixtures, Python 2 pickles, and the restricted unpickler."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
import subprocess

import numpy as np
import pytest

from lrfr_plugins.errors import DataError
from lrfr_plugins.formats import load_verification_bin, write_verification_bin
from lrfr_plugins.formats.verification_bin import ALLOWED_GLOBALS, safe_load_pickle

FIX = pathlib.Path(__file__).parent / "fixtures" / "mxnet"
EXPECTED = json.loads((FIX / "expected.json").read_text())["verification"]


def sha(b: bytes) -> str:
    return hashlib.sha256(bytes(b)).hexdigest()


@pytest.mark.parametrize("name", ["tiny_py3.bin", "tiny_py2.bin"])
def test_loads_fixture_bins(name):
    vb = load_verification_bin(FIX / "verification" / name)
    assert len(vb) == 4 and vb.issame == EXPECTED["issame"]
    assert all(type(b) is bytes for b in vb.bins) and all(type(s) is bool for s in vb.issame)
    assert [sha(b) for b in vb.bins] == EXPECTED["bins_sha256"]
    a, b, same = vb.pair(1)
    assert (a, b, same) == (vb.bins[2], vb.bins[3], False)
    imgs = vb.decode_all()
    assert imgs.shape == (8, 112, 112, 3) and imgs.dtype == np.uint8
    for img, ref in zip(imgs, EXPECTED["mx_imdecode_rgb"]):
        if sha(img.tobytes()) != ref["sha256"]:  # pragma: no cover - Pillow with another libjpeg
            assert np.allclose(img.reshape(-1, 3).mean(0), ref["mean"], atol=0.5)


def test_py2_fixture_really_is_a_python2_pickle():
    data = (FIX / "verification" / "tiny_py2.bin").read_bytes()
    assert data[:2] == b"\x80\x02"
    with pytest.raises(UnicodeDecodeError):  # what a plain pickle.load does with py2 str blobs
        pickle.loads(data)
    assert "UnicodeDecodeError" in EXPECTED["py2_plain_pickle_load"]


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _EvilPopen:
    def __reduce__(self):
        return (subprocess.Popen, (["true"],))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_refuses_os_system(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([_Evil(f"touch {marker}")], [True]), protocol=protocol))
    with pytest.raises(DataError) as err:
        load_verification_bin(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{os.system.__module__}.system'" in msg  # posix.system / nt.system
    assert "will not run code from a downloaded file" in msg
    assert not marker.exists()


@pytest.mark.parametrize("payload", [_EvilPopen(), print, eval])
def test_refuses_other_globals(tmp_path, payload):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([payload], [True]), protocol=2))
    with pytest.raises(DataError, match=r"evil\.bin: the pickle asks to import the global '[\w.]+' "
                                        r"\(Python 3: '(subprocess\.Popen|builtins\.print|builtins\.eval)'\)"):
        load_verification_bin(path)


def test_allowed_stand_ins_check_their_arguments(tmp_path):
    # _codecs.encode with anything but latin1 (protocol-2 bytes encoding) is refused
    evil = b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x05\x00\x00\x00rot13q\x02\x86q\x03Rq\x04."
    with pytest.raises(DataError, match=r"x\.bin: refused while unpickling: _codecs\.encode called with str, "):
        safe_load_pickle("x.bin", evil)
    # an object-dtype numpy array (its elements would be arbitrary objects) is refused
    with pytest.raises(DataError, match="holds Python objects"):
        safe_load_pickle("x.bin", pickle.dumps(np.array([b"a", 1], dtype=object), protocol=4))
    assert all(mod not in ("os", "posix", "nt", "subprocess") for mod, _ in ALLOWED_GLOBALS)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_repacks_load(tmp_path, protocol):
    vb = load_verification_bin(FIX / "verification" / "tiny_py3.bin")
    bins = [np.frombuffer(b, np.uint8) for b in vb.bins]  # some re-packs store uint8 arrays
    issame = np.array(vb.issame)
    path = tmp_path / "np.bin"
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))
    got = load_verification_bin(path)
    assert got.bins == vb.bins and got.issame == vb.issame
    with pytest.raises(DataError, match=r"np\.bin: the pickle asks to import the global 'numpy.*allow_numpy=True"):
        load_verification_bin(path, allow_numpy=False)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_python3_pickles_of_bytes_load(tmp_path, protocol):
    # protocol <= 2 on Python 3 writes bytes as _codecs.encode(str, 'latin1'), empty bytes as bytes()
    path = tmp_path / "p.bin"
    bins = [b"\xff\xd8\xff\x00\x80", b"\x89PNG\r\n", b"\xff\xd8\xff", b"\x89PNG\x00"]
    path.write_bytes(pickle.dumps((bins, [True, False]), protocol=protocol))
    vb = load_verification_bin(path)
    assert vb.bins == bins and vb.issame == [True, False]
    path.write_bytes(pickle.dumps(([b"", bytearray(b"\xff\xd8\xff")], [1]), protocol=protocol))
    vb = load_verification_bin(path, check_signatures=False)
    assert vb.bins == [b"", b"\xff\xd8\xff"] and vb.issame == [True]


def test_write_round_trip_protocol_4_atomic(tmp_path):
    src = load_verification_bin(FIX / "verification" / "tiny_py2.bin")
    out = tmp_path / "sub" / "lfw_tiny.bin"
    write_verification_bin(out, src.bins, src.issame)
    data = out.read_bytes()
    assert data[:2] == b"\x80\x04"
    assert pickle.loads(data, encoding="bytes") == (src.bins, src.issame)  # what arcface_torch's load_bin sees
    got = load_verification_bin(out)
    assert got.bins == src.bins and got.issame == src.issame
    assert [p.name for p in out.parent.iterdir()] == ["lfw_tiny.bin"]
    with pytest.raises(DataError, match="2 images per pair"):
        write_verification_bin(out, src.bins[:3], src.issame)
    assert out.read_bytes() == data  # a failed write leaves the old file


@pytest.mark.parametrize("obj, match", [
    ((b"\xff\xd8\xff", b"\xff\xd8\xff", [True]), r"holds a 3-element tuple; .*2-tuple"),
    (([b"\xff\xd8\xff"] * 3, [True]), r"3 images for 1 pairs"),
    (([b"\xff\xd8\xff", "text"], [True]), r"bins\[1\] is a str"),
    (([b"\xff\xd8\xff", b"GIF89a"], [True]), r"bins\[1\] starts with bytes 47 49 46 38"),
    (([b"\xff\xd8\xff"] * 2, [2]), r"issame_list\[0\] is 2"),
    ({"bins": []}, r"holds dict"),
])
def test_validation_errors(tmp_path, obj, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(DataError, match=r"bad\.bin: " + match):
        load_verification_bin(path)


def test_truncated_and_missing(tmp_path):
    data = (FIX / "verification" / "tiny_py3.bin").read_bytes()
    path = tmp_path / "cut.bin"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.bin: not a readable pickle .*truncated or corrupt"):
        load_verification_bin(path)
    with pytest.raises(DataError, match=r"none\.bin: file not found"):
        load_verification_bin(tmp_path / "none.bin")
