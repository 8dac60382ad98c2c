"""What the toolkit survives from hostile or careless .bin files (issue 14): each file is generated here and small,
and each is answered by one DataError naming the file and the fix, without allocating far more than the file holds
and without a traceback from ``lrfr eval``.

Hostile: pickles that make the unpickler allocate gigabytes (numpy.ndarray called directly, a huge _reconstruct
shape, a zero-byte dtype with a huge length, a huge memo index, a huge declared length, one blob copied or listed
thousands of times). Careless: fewer pairs than folds, pairs of one kind only, empty lists (and the same for
LFW pairs files, whose header may name one fold).
"""

from __future__ import annotations

import pathlib
import pickle
import re
import struct
import tracemalloc

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lrfr_plugins.builtin.protocols.lfw import LFW, LFWParams
from lrfr_plugins.builtin.protocols.pairs import evaluate_pairs
from lrfr_plugins.builtin.protocols.verification_bin import VerificationBin, VerificationBinParams
from lrfr_plugins.cli import main
from lrfr_plugins.errors import DataError, ParamsError
from lrfr_plugins.formats.verification_bin import load_verification_bin, write_verification_bin

TINY = pathlib.Path(__file__).parent / "fixtures" / "mxnet" / "verification" / "tiny_py3.bin"
JPEG = b"\xff\xd8\xff\xe0" + bytes(60)
#: Peak Python/numpy allocation allowed while refusing a hostile file of a few kB (each bomb asks for >= 256 MiB).
PEAK = 32 * 2**20


def write(tmp_path, data: bytes, name: str = "evil.bin") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(path: pathlib.Path, match: str) -> str:
    """Load ``path``, expect a DataError naming it and matching ``match``; check the peak allocation stayed small."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=match) as err:
            load_verification_bin(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(err.value)
    assert peak < PEAK, f"refusing a {path.stat().st_size}-byte file allocated {peak / 2**20:.0f} MiB"
    return str(err.value)


def long1(n: int) -> bytes:
    body = n.to_bytes((n.bit_length() + 8) // 8, "little")
    return b"\x8a" + bytes([len(body)]) + body


def as_bin(item: bytes, proto: int = 2) -> bytes:
    """A protocol-``proto`` pickle of ([item], [True]) where ``item`` is the opcodes that push one object."""
    return b"\x80" + bytes([proto]) + b"]" + item + b"a]\x88a\x86."


def test_numpy_ndarray_called_from_the_pickle_is_refused_without_allocating(tmp_path):
    # numpy.ndarray((2**27,)): a 1 GiB float64 array from a 34-byte file
    path = write(tmp_path, as_bin(b"cnumpy\nndarray\n" + long1(2**27) + b"\x85R"))
    msg = refused(path, r"refused while unpickling: the pickle calls numpy\.ndarray")
    assert len(path.read_bytes()) < 100 and "re-download" in msg


def test_reconstruct_with_a_shape_larger_than_the_file_is_refused(tmp_path):
    # numpy's _reconstruct(ndarray, (2**30,), b'b'): numpy itself always writes shape (0,)
    item = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + long1(2**30) + b"\x85C\x01b\x87R"
    path = write(tmp_path, as_bin(item, proto=3))
    refused(path, r"_reconstruct asks for an array of 1073741824 bytes, more than the whole file")


def test_zero_byte_dtype_array_with_a_huge_length_is_refused(tmp_path):
    # a V0 array of 3M elements holds no bytes, so the file is tiny, but listing its elements costs hundreds of MB
    path = write(tmp_path, pickle.dumps(([JPEG, JPEG[:]], np.empty(3_000_000, "V0")), protocol=4))
    refused(path, r"numpy dtype \|V0 is not a bool or integer type")


@pytest.mark.parametrize("opcodes, op, offset", [
    (b"\x80\x02Nr" + struct.pack("<I", 2**25) + b".", "LONG_BINPUT", 3),
    (b"Np33554432\n.", "PUT", 1),
], ids=["LONG_BINPUT", "PUT"])
def test_memo_index_beyond_the_opcodes_is_refused_before_unpickling(tmp_path, opcodes, op, offset):
    # CPython's unpickler grows its memo to twice the index and zeroes it: 512 MiB for a 9-byte file
    path = write(tmp_path, opcodes)
    refused(path, rf"evil\.bin: not a readable pickle \(at byte {offset}, {op}: memo index 33554432 after only \d "
                  r"opcodes?\); the file is corrupt or hostile")


@pytest.mark.parametrize("opcodes, op", [
    (b"\x80\x04\x8e" + struct.pack("<Q", 2**30) + b"\xff\xd8\xff.", "BINBYTES8"),
    (b"\x80\x03B" + struct.pack("<I", 2**30) + b"\xff\xd8\xff.", "BINBYTES"),
    (b"\x80\x05\x96" + struct.pack("<Q", 2**30) + b"\xff\xd8\xff.", "BYTEARRAY8"),
], ids=["BINBYTES8", "BINBYTES", "BYTEARRAY8"])
def test_declared_length_beyond_the_file_is_refused_before_unpickling(tmp_path, opcodes, op):
    # CPython allocates the declared 1 GiB before it reads the 4 bytes that are there
    path = write(tmp_path, opcodes)
    refused(path, rf"not a readable pickle \(at byte 2, {op}: expected 1073741824 bytes .* but only 4 remain\); the "
                  r"file is truncated or corrupt")


def test_one_blob_copied_thousands_of_times_is_refused(tmp_path):
    # bytearray(blob) called 2000 times on one memoized 64 KiB blob: 128 MiB of copies from a 76 kB file
    blob = b"\xff\xd8\xff" + bytes(2**16)
    data = (b"\x80\x04]\x94"  # the bins list, memo 0
            b"cbuiltins\nbytearray\n\x940"  # the global, memo 1, popped
            + b"B" + struct.pack("<I", len(blob)) + blob + b"\x940"  # the blob, memo 2, popped
            + b"(" + b"h\x01h\x02\x85R" * 2000 + b"e"  # 2000 x bytearray(blob) appended to bins
            + b"](" + b"\x88" * 1000 + b"e\x86.")  # issame: 1000 x True; (bins, issame)
    path = write(tmp_path, data)
    assert len(path.read_bytes()) < 80_000
    refused(path, r"refused while unpickling: bytearray\(\) would bring the bytes made from the file to \d+, more "
                  r"than twice its \d+ bytes")


def test_the_same_image_object_listed_many_times_is_refused(tmp_path):
    # a memo reference per entry: 20,000 images (750 MB once decoded to 112x112) from a 50 kB file
    path = write(tmp_path, pickle.dumps(([JPEG] * 20_000, [True, False] * 5_000), protocol=4))
    assert len(path.read_bytes()) < 60_000
    refused(path, r"bins\[1\] is the same pickled object as bins\[0\] \(a memo reference\)")
    # what lrfr writes itself never refers back, so the same bytes twice still load
    write_verification_bin(tmp_path / "ok.bin", [JPEG] * 4, [True, False])
    assert load_verification_bin(tmp_path / "ok.bin").bins == [JPEG] * 4


# ---------------------------------------------------------------------------------------------------------------
# careless .bin content at evaluation time


def repack(tmp_path, issame, name="x.bin") -> pathlib.Path:
    """The tiny fixture's images with other labels (or none)."""
    bins = load_verification_bin(TINY).bins
    path = tmp_path / name
    write_verification_bin(path, bins[: 2 * len(issame)], issame)
    return path


def bin_protocol(path, **params) -> VerificationBin:
    return VerificationBin(VerificationBinParams(path=str(path), sizes=[112], **params))


def test_fixture_bin_with_fewer_pairs_than_folds_is_refused_naming_the_folds_parameter():
    with pytest.raises(DataError) as err:
        bin_protocol(TINY).check()
    assert str(err.value) == (
        f"{TINY}: has 4 pairs, fewer than the 10 folds (each fold needs at least one pair): set the protocol "
        "parameter folds to at most 4 (lrfr eval: --set folds=4), or use a .bin with at least 10 pairs.")
    result = bin_protocol(TINY, folds=4).evaluate(lambda x: x.float().mean((2, 3)).numpy() + 1.0, progress=False)
    assert result.settings["folds"] == 4 and 0 <= result.results["112"]["accuracy"] <= 1


@pytest.mark.parametrize("label, kind", [(True, "same-identity"), (False, "different-identity")])
def test_bin_with_pairs_of_one_kind_only_is_refused(tmp_path, label, kind):
    path = repack(tmp_path, [label] * 4)
    with pytest.raises(DataError) as err:
        bin_protocol(path, folds=2).check()
    assert str(err.value).startswith(f"{path}: all 4 pairs are {kind} pairs (issame is all {label}); accuracy "
                                     "thresholds are undefined without both kinds")


def test_bin_with_empty_lists_is_refused(tmp_path):
    path = repack(tmp_path, [])
    with pytest.raises(DataError, match=r"x\.bin: holds no pairs; there is nothing to verify\. Use a \.bin with"):
        bin_protocol(path).evaluate(lambda x: None, progress=False)


@pytest.mark.parametrize("labels, match", [
    (None, r"tiny_py3\.bin: has 4 pairs, fewer than the 10 folds .*--set folds=4"),
    ([True] * 4, r"x\.bin: all 4 pairs are same-identity pairs"),
    ([], r"x\.bin: holds no pairs"),
], ids=["few-pairs", "one-kind", "empty"])
def test_cli_eval_on_a_careless_bin_is_a_one_line_error(tmp_path, registry, labels, match):
    model = tmp_path / "backbone.pth"
    torch.save(registry.create("backbone", "tiny").state_dict(), model)
    path = TINY if labels is None else repack(tmp_path, labels)
    result = CliRunner().invoke(main, ["eval", str(model), "--backbone", "tiny", "-p", "bin", "--set",
                                       f"path={path}", "--set", "sizes=[112]", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert re.search(match, result.output)


def test_lozhkina_procedure_with_one_fold_is_a_parameter_error(registry):
    with pytest.raises(ParamsError, match=r"folds=1 .*procedure insightface"):
        registry.create("protocol", "bin", path=str(TINY), folds=1, procedure="lozhkina")


def test_lfw_pairs_file_with_one_kind_or_fewer_pairs_than_folds_is_refused(tmp_path):
    root = tmp_path / "lfw_crop"
    root.mkdir()
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\nAnna_A\t1\t2\nBen_B\t1\t2\nAnna_A\t1\tBen_B\t1\nAnna_A\t2\tBen_B\t2\n")
    with pytest.raises(DataError, match=r"pairs\.txt: has 4 pairs, fewer than the 10 folds .*--set folds=4"):
        LFW(LFWParams(root=str(root))).check()
    pairs.write_text("1\t2\nAnna_A\t1\t2\nBen_B\t1\t2\nAnna_A\t1\t3\nBen_B\t2\t3\n")
    with pytest.raises(DataError, match=r"pairs\.txt: all 4 pairs are same-identity pairs"):
        LFW(LFWParams(root=str(root), folds=2)).check()


def test_evaluate_pairs_refuses_fewer_pairs_than_folds_before_embedding():
    images = torch.zeros((6, 3, 112, 112), dtype=torch.uint8)
    with pytest.raises(DataError, match=r"my pairs: has 3 pairs, fewer than the 10 folds"):
        evaluate_pairs(images, np.arange(6).reshape(3, 2), [True, False, True], lambda x: pytest.fail("embedded"),
                       sizes=[112], source="my pairs", progress=False)


def test_lfw_pairs_header_with_one_fold_under_the_lozhkina_procedure_is_refused(tmp_path):
    root = tmp_path / "lfw_crop"
    root.mkdir()
    (tmp_path / "pairs.txt").write_text("1\t1\nAnna_A\t1\t2\nAnna_A\t1\tBen_B\t1\n")
    with pytest.raises(DataError, match=r"pairs\.txt: 1 fold with the lozhkina procedure, .* needs at least 2: set "
                                        r"the protocol parameter folds \(lrfr eval: --set folds=10\), or "
                                        r"procedure=insightface"):
        LFW(LFWParams(root=str(root))).check()
    LFW(LFWParams(root=str(root), procedure="insightface")).check()  # one fold is the LFold there
