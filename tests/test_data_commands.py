"""`lrfr data pack` and `lrfr data info`: pack an image folder into a face2rec2 pack, describe packs/.bin/folders."""

import io
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import run_lrfr
from PIL import Image

import lrfr_plugins
from lrfr_plugins.cli import main
from lrfr_plugins.data_commands import describe, format_description
from lrfr_plugins.errors import DataError
from lrfr_plugins.formats.packing import pack_image_folder
from lrfr_plugins.formats.recordio import TrainingSet
from lrfr_plugins.ops.resize import resize_to

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "mxnet"
BIN = FIXTURES / "verification" / "tiny_py3.bin"


def _face(seed: int, size: int = 112, grey: bool = False) -> np.ndarray:
    """A smooth, face-sized test image (smooth, so JPEG error stays small and comparable)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    chans = [np.clip(128 + 90 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y + rng.uniform())),
                     0, 255) for _ in range(1 if grey else 3)]
    arr = np.stack(chans, -1).astype(np.uint8)
    return arr[..., 0] if grey else arr


def _jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def faces(tmp_path):
    """alice: 2 RGB PNG; bob: a 96x96 PNG and a 112x112 JPEG; carol: a grey PNG and an RGB PNG (sorted names)."""
    src = tmp_path / "faces"
    for name in ("alice", "bob", "carol"):
        (src / name).mkdir(parents=True)
    Image.fromarray(_face(1)).save(src / "alice" / "a1.png")
    Image.fromarray(_face(2)).save(src / "alice" / "a2.png")
    Image.fromarray(_face(3, size=96)).save(src / "bob" / "b1_small.png")
    (src / "bob" / "b2.jpg").write_bytes(_jpeg_bytes(_face(4)))
    Image.fromarray(_face(5, grey=True)).save(src / "carol" / "c1_grey.png")
    Image.fromarray(_face(6)).save(src / "carol" / "c2.png")
    return src


def _rgb(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def test_pack_reads_back_through_the_dataset_plugin_and_training_set(faces, tmp_path):
    dst = tmp_path / "packed"
    warnings: list[str] = []
    summary = pack_image_folder(faces, dst, warn=warnings.append)
    assert (summary.images, summary.identities, summary.resized, summary.copied, summary.skipped) == (6, 3, 1, 1, [])
    assert sorted(p.name for p in dst.iterdir()) == ["property", "train.idx", "train.rec"]  # no temp files left
    assert summary.bytes == sum(p.stat().st_size for p in dst.iterdir())
    assert "6 images of 3 identities" in summary.line() and "1 resized" in summary.line()
    assert len(warnings) == 1 and "1 of 6 images" in warnings[0] and "b1_small.png (96x96)" in warnings[0]
    assert (dst / "property").read_text() == "3,112,112\n"

    data = lrfr_plugins.create("dataset", "insightface-rec", root=str(dst))
    assert len(data) == 6 and data.num_classes == 3
    items = [data[i] for i in range(6)]
    assert [label for _, label in items] == [0, 0, 1, 1, 2, 2]
    assert all(img.dtype == torch.uint8 and img.shape == (3, 112, 112) for img, _ in items)
    got = [img.permute(1, 2, 0).numpy().astype(int) for img, _ in items]
    src = sorted(p for p in faces.rglob("*") if p.is_file())  # same order: identity, then file name
    for i in (0, 1, 5):  # RGB PNG -> JPEG q95
        diff = np.abs(got[i] - _rgb(src[i]).astype(int))
        assert diff.mean() < 2.5 and diff.max() < 40, (src[i], diff.mean(), diff.max())
    small = torch.from_numpy(_rgb(src[2])).permute(2, 0, 1)[None]
    expected_resized = resize_to(small, (112, 112))[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(got[2] - expected_resized).mean() < 2.5
    grey = _rgb(src[4]).astype(int)
    assert np.abs(got[4] - grey).mean() < 2.5 and np.array_equal(got[4][..., 0], got[4][..., 1])

    ts = TrainingSet(dst)
    try:
        header, stored = ts.read(3)  # bob/b2.jpg: a 112x112 JPEG is stored byte for byte
        assert stored == src[3].read_bytes() and header.flag == 0 and header.id == 4
        assert ts.meta.flag == 2 and list(ts.meta.label) == [7.0, 10.0]
        assert [ts.identity_range(k) for k in range(3)] == [(1, 3), (3, 5), (5, 7)]
        assert list(ts.reader.keys) == [1, 2, 3, 4, 5, 6, 0, 7, 8, 9]  # face2rec2's file order
    finally:
        ts.close()


def test_list_file_labels_and_quality(faces, tmp_path):
    (faces / "train.txt").write_text("carol/c2.png 5\nalice/a1.png 2\n")
    low = pack_image_folder(faces, tmp_path / "low", list_file=faces / "train.txt", quality=10)
    high = pack_image_folder(faces, tmp_path / "high", list_file="train.txt", quality=95)
    assert (low.images, low.identities) == (2, 6) and low.bytes < high.bytes
    ts = TrainingSet(tmp_path / "low")
    try:
        assert [ts.label_of(*_header_key(ts, i)) for i in range(2)] == [2, 5]  # grouped by label
        assert ts.identity_range(0) == (1, 1) and ts.identity_range(2) == (1, 2) and ts.identity_range(5) == (2, 3)
    finally:
        ts.close()


def _header_key(ts, i):
    return ts.read(i)[0], ts.image_keys[i]


def test_overwrite_is_refused_and_a_failed_repack_keeps_the_old_pack(faces, tmp_path):
    dst = tmp_path / "packed"
    pack_image_folder(faces, dst)
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    with pytest.raises(DataError, match=r"already holds a pack .*--overwrite"):
        pack_image_folder(faces, dst)
    (faces / "carol" / "c3_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match=r"c3_broken\.jpg: cannot decode the image .*--skip-corrupt"):
        pack_image_folder(faces, dst, overwrite=True)
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before  # atomic: untouched, no temp files
    with pytest.raises(DataError, match=r"c3_broken\.jpg"):
        pack_image_folder(faces, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # a folder it created is removed again

    warnings: list[str] = []
    summary = pack_image_folder(faces, dst, overwrite=True, skip_corrupt=True, warn=warnings.append)
    assert summary.images == 6 and summary.skipped == [str(faces / "carol" / "c3_broken.jpg")]
    assert any("skipped 1 corrupt image" in w and "c3_broken.jpg" in w for w in warnings)
    assert len(lrfr_plugins.create("dataset", "insightface-rec", root=str(dst))) == 6
    with pytest.raises(DataError, match=r"inside the source folder"):
        pack_image_folder(faces, faces / "packed")


def test_describe_pack_rec_bin_and_folder(faces, tmp_path):
    dst = tmp_path / "packed"
    pack_image_folder(faces, dst)
    d = describe(dst)
    assert d["format"] == "insightface-pack" and d["layout"] == "face2rec2"
    assert (d["images"], d["identities"], d["records"]) == (6, 3, 10)
    assert d["meta_header"] == {"flag": 2, "label": [7, 10]} and d["property"]["num_classes"] == 3
    assert d["image_sizes"] == ["112x112"] and d["sample_labels"] == [0, 0, 1, 2, 2]
    assert d["identity_ranges"][0] == {"identity": 0, "start": 1, "end": 3}
    assert set(d["files"]) == {"train.rec", "train.idx", "property"}
    assert json.loads(json.dumps(d)) == d
    text = format_description(d)
    assert "face2rec2" in text and "label=[7, 10]" in text and "train.rec" in text

    # a .rec without .idx is scanned; record 0 comes after the images, and the keys are restored from it
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(dst / "train.rec", lone / "x.rec")
    shutil.copy(FIXTURES / "faces_tiny" / "train.rec", lone / "mx.rec")  # mxnet-made: record 0 last in the file
    for name in ("x.rec", "mx.rec"):
        d2 = describe(lone / name, progress=True)
        assert d2["format"] == "recordio" and d2["layout"] == "face2rec2" and "keyed by IRHeader ids" in d2["index"]
        assert (d2["images"], d2["identities"], d2["sample_labels"]) == (6, 3, [0, 0, 1, 2, 2])
        assert d2["identity_ranges"][-1] == {"identity": 2, "start": 5, "end": 7}

    b = describe(BIN)
    assert b["format"] == "verification-bin"
    assert (b["pairs"], b["positives"], b["negatives"], b["images"]) == (4, 2, 2, 8)
    assert b["image_sizes"] == ["112x112"] and b["encodings"] == {"JPEG": 8}
    assert "4 (2 same, 2 different)" in format_description(b)

    f = describe(faces)
    assert f["format"] == "image-folder" and (f["images"], f["identities"]) == (6, 3)
    assert f["image_sizes"] == ["112x112", "96x96"] and f["extensions"] == {".jpg": 1, ".png": 5}
    assert "images per identity" in format_description(f)


def test_describe_errors_say_what_is_accepted(tmp_path):
    with pytest.raises(DataError, match=r"no such file or folder.*pack folder.*\.bin.*image folder"):
        describe(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"not a recognised data folder.*empty.*accepts"):
        describe(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: not a recognised data file.*accepts"):
        describe(tmp_path / "notes.txt")
    (tmp_path / "bad.rec").write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match=r"bad\.rec.*bad magic"):
        describe(tmp_path / "bad.rec")


def test_cli_in_process(faces, tmp_path):
    runner = CliRunner()
    dst = tmp_path / "packed"
    res = runner.invoke(main, ["data", "pack", str(faces), str(dst), "--no-progress", "--quality", "90"])
    assert res.exit_code == 0, res.output
    assert "Packed 6 images of 3 identities" in res.output
    res = runner.invoke(main, ["data", "info", str(faces / "alice")])  # images directly in the folder
    assert res.exit_code == 1 and "one sub-folder per identity" in res.output


def test_real_cli(faces, tmp_path):
    dst = tmp_path / "packed"
    res = run_lrfr("data", "pack", str(faces), str(dst), "--no-progress", timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Packed 6 images of 3 identities" in res.stdout and "1 resized, 0 skipped" in res.stdout
    assert res.stderr.count("Warning:") == 1 and "b1_small.png" in res.stderr

    res = run_lrfr("data", "pack", str(faces), str(dst), timeout=120)
    assert res.returncode == 1 and "Error:" in res.stderr and "--overwrite" in res.stderr
    assert "Traceback" not in res.stderr

    res = run_lrfr("data", "info", str(dst), timeout=120)
    assert res.returncode == 0 and "face2rec2" in res.stdout and "3 (property 3,112,112)" in res.stdout
    res = run_lrfr("data", "info", str(dst), "--json", timeout=120)
    assert res.returncode == 0 and json.loads(res.stdout)["images"] == 6

    res = run_lrfr("data", "info", str(BIN), timeout=120)
    assert res.returncode == 0 and "verification .bin" in res.stdout and "2 same" in res.stdout
    res = run_lrfr("data", "info", str(BIN), "--json", timeout=120)
    assert res.returncode == 0 and json.loads(res.stdout)["positives"] == 2

    res = run_lrfr("data", "info", str(faces), timeout=120)
    assert res.returncode == 0 and "image folder" in res.stdout and "96x96" in res.stdout
    res = run_lrfr("data", "info", str(faces), "--json", timeout=120)
    assert res.returncode == 0 and json.loads(res.stdout)["identities"] == 3

    res = run_lrfr("data", "info", str(tmp_path / "nowhere"), timeout=120)
    assert res.returncode == 1 and "no such file or folder" in res.stderr and "Traceback" not in res.stderr
