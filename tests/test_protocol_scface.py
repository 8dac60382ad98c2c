"""The scface protocol on a tiny SCface copy in the real release layout, with an embedder whose scores we control.

Every image is a flat colour that encodes (subject index, camera, distance); the embedder reads the colour back and
returns the subject's one-hot direction, or a mixture that ranks the true subject 2nd or 3rd for the probes listed in
CONFUSE, so every rank-1 and CMC value is known exactly.
"""

import itertools
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from lrfr_plugins.builtin.protocols.scface import SCface, SCfaceParams
from lrfr_plugins.errors import DataError

SUBJECTS = [1, 2, 44, 88]  # 44 is in bob's dev group, 88 in eval
DAY_CAMS, IR_CAM = [1, 2], 6
DIM = 8
#: (subject, camera, distance) -> the impostor subjects that outscore the true one, best first
CONFUSE = {
    (1, 1, 1): [2], (2, 2, 1): [44, 88], (88, 1, 1): [1],  # d1 day: 5/8 at rank 1, 7/8 by rank 2
    (44, 2, 2): [1],  # d2 day: 7/8
    (1, 6, 1): [88], (2, 6, 1): [1],  # d1-night: 2/4
}


def colour(subject, camera, distance):
    return (40 * (SUBJECTS.index(subject) + 1), 25 * camera, 60 * distance)


def write(path, rgb, size=(112, 112)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, quality=95)


def make_scface(root, *, mugshot_size=(112, 112), flat=False, night_distances=(1, 2)):
    """The release layout: mugshot_frontal_cropped_all/, surveillance_cameras_distance_D/camC/NNN_camC_D.jpg (or the
    flat surveillance_cameras_all/), surveillance_cameras_IR_cam8/NNN_cam8.jpg, features.txt."""
    for s in SUBJECTS:
        write(root / "mugshot_frontal_cropped_all" / f"{s:03d}_frontal.jpg", colour(s, 0, 0), mugshot_size)
        write(root / "surveillance_cameras_IR_cam8" / f"{s:03d}_cam8.jpg", colour(s, 8, 0))
        for d in (1, 2, 3):
            cams = DAY_CAMS + ([IR_CAM] if d in night_distances else [])
            for c in cams:
                folder = root / "surveillance_cameras_all" if flat else \
                    root / f"surveillance_cameras_distance_{d}" / f"cam{c}"
                write(folder / f"{s:03d}_cam{c}_{d}.jpg", colour(s, c, d))
    (root / "features.txt").write_text("header\n" * 10)
    return root


class Embed:
    """Reads (subject, camera, distance) from the top-left pixels (which survive a top-left pad) and counts images."""

    def __init__(self):
        self.images = 0

    def __call__(self, batch):
        self.images += batch.shape[0]
        px = batch[:, :, 2:6, 2:6].float().mean(dim=(2, 3)).numpy()
        out = np.zeros((batch.shape[0], DIM), np.float32)
        for i, (r, g, b) in enumerate(px):
            s = SUBJECTS[round(r / 40) - 1]
            c, d = round(g / 25), round(b / 60)
            out[i, SUBJECTS.index(s)] = 0.4 if (s, c, d) in CONFUSE else 1.0
            for j, w in enumerate(CONFUSE.get((s, c, d), [])):
                out[i, SUBJECTS.index(w)] = 0.9 - 0.1 * j
        return out


def run(root, **kw):
    embed = Embed()
    result = SCface(SCfaceParams(root=str(root), **kw)).evaluate(embed, progress=False)
    return result, embed


@pytest.fixture(scope="module")
def scface_root(tmp_path_factory):
    return make_scface(tmp_path_factory.mktemp("scface"))


@pytest.fixture(scope="module")
def default_run(scface_root):
    return run(scface_root)


def test_rank1_per_distance_day_and_night(default_run):
    result, _ = default_run
    assert result.protocol == "scface" and result.preset == "lozhkina"
    assert result.results == {
        "d1": {"rank1": 5 / 8, "n_probes": 8}, "d2": {"rank1": 7 / 8, "n_probes": 8},
        "d3": {"rank1": 1.0, "n_probes": 8},
        "d1-night": {"rank1": 2 / 4, "n_probes": 4}, "d2-night": {"rank1": 1.0, "n_probes": 4},
    }
    rows = {r["key"]: r for r in result.rows}
    assert rows["d1"]["rank5"] == 1.0 and rows["d1"]["n_gallery"] == 4 and rows["d1"]["skipped"] == 0
    assert rows["d1"]["cameras"] == "1,2" and rows["d1-night"]["cameras"] == "6"
    assert result.settings["night_keys"] == ["d1-night", "d2-night"]


def test_distance_label_1_is_farthest(default_run):
    result, _ = default_run
    rows = {r["key"]: r for r in result.rows}
    assert [rows[k]["distance_m"] for k in ("d1", "d2", "d3")] == [4.20, 2.60, 1.00]
    assert rows["d1"]["distance_label"] == 1 and rows["d1-night"]["distance_m"] == 4.20
    assert result.settings["distances"]["d1"] == "label 1 = 4.20 m (farthest)"
    assert result.settings["distances"]["d3"] == "label 3 = 1.00 m (closest)"


def test_cmc_curves(default_run):
    result, _ = default_run
    assert set(result.curves) == {f"cmc:{k}" for k in result.results}
    d1 = result.curves["cmc:d1"]
    assert d1["rank"] == list(range(1, 21))
    assert d1["rate"][:4] == [0.625, 0.875, 1.0, 1.0]  # one probe at rank 3
    for key, metrics in result.results.items():
        rate = result.curves[f"cmc:{key}"]["rate"]
        assert all(a <= b for a, b in itertools.pairwise(rate))
        assert rate[len(SUBJECTS) - 1] == 1.0  # by rank = gallery size
        assert rate[0] == metrics["rank1"]


def test_each_image_embedded_once(default_run):
    _, embed = default_run
    assert embed.images == 4 + 3 * 8 + 2 * 4  # frontal gallery (shared by day and night) + all probes


def test_flat_layout_and_night_absent(tmp_path):
    root = make_scface(tmp_path / "flat", flat=True, night_distances=())
    result, _ = run(root, night=True)
    assert set(result.results) == {"d1", "d2", "d3"}
    assert result.results["d1"]["rank1"] == 5 / 8
    assert result.settings["probes"] == "surveillance_cameras_all"


def test_ir_mugshot_gallery_and_distances(scface_root):
    result, embed = run(scface_root, night_gallery="cam8", distances=[1])
    assert set(result.results) == {"d1", "d1-night"}
    assert result.results["d1-night"] == {"rank1": 0.5, "n_probes": 4}
    assert embed.images == 4 + 4 + 8 + 4


def test_bob_presets_restrict_subjects(scface_root):
    result, _ = run(scface_root, preset="bob-dev")
    assert result.preset == "bob-dev" and result.settings["subjects"] == "dev"
    assert all(v["n_probes"] == len(DAY_CAMS) for k, v in result.results.items() if "night" not in k)
    assert result.results["d2"]["rank1"] == 1.0  # 044_cam2_2's impostor (001) is not in the dev gallery


def test_non_112_mugshots_are_resized_with_one_warning(tmp_path, caplog):
    root = make_scface(tmp_path / "big", mugshot_size=(96, 128))
    with caplog.at_level(logging.WARNING, logger="lrfr"):
        result, _ = run(root)
    warnings = [r for r in caplog.records if "not an aligned 112x112" in r.getMessage()]
    assert len(warnings) == 1 and "topleft-pad" in warnings[0].getMessage()
    assert result.settings["resized_images"] == 4 and result.settings["resize"] == "topleft-pad"
    assert result.results["d1"]["rank1"] == 5 / 8


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"nope does not exist.*mugshot_frontal_cropped_all"):
        run(tmp_path / "nope")


def test_empty_gallery(tmp_path, scface_root):
    root = tmp_path / "copy"
    shutil.copytree(scface_root, root)
    for f in (root / "mugshot_frontal_cropped_all").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"mugshot_frontal_cropped_all: the gallery .* has no images.*NNN_frontal"):
        run(root)


def test_probe_without_gallery_subject_error_or_skip(tmp_path, scface_root):
    root = tmp_path / "copy"
    shutil.copytree(scface_root, root)
    (root / "mugshot_frontal_cropped_all" / "088_frontal.jpg").unlink()
    with pytest.raises(DataError, match=r"088_cam1_1\.jpg: subject 088 has no gallery image.*missing_gallery: skip"):
        run(root)
    result, _ = run(root, missing_gallery="skip")
    rows = {r["key"]: r for r in result.rows}
    assert rows["d1"]["skipped"] == 2 and result.results["d1"]["n_probes"] == 6
    assert result.settings["skipped"]["d1-night"] == 1


def test_unparseable_name(tmp_path, scface_root):
    root = tmp_path / "copy"
    shutil.copytree(scface_root, root)
    write(root / "surveillance_cameras_distance_2" / "cam1" / "subject1_cam1.jpg", (0, 0, 0))
    with pytest.raises(DataError, match=r"subject1_cam1\.jpg.*expected NNN_camC_D\.jpg"):
        run(root)


def test_wrong_distance_folder(tmp_path, scface_root):
    root = tmp_path / "copy"
    shutil.copytree(scface_root, root)
    shutil.move(root / "surveillance_cameras_distance_2" / "cam1" / "001_cam1_2.jpg",
                root / "surveillance_cameras_distance_1" / "cam1" / "001_cam1_2.jpg")
    with pytest.raises(DataError, match=r"001_cam1_2\.jpg: distance label 2 .* distance-1 folder"):
        run(root)


def test_lai_lam_requires_complete_copy(scface_root):
    with pytest.raises(DataError, match=r"126 of 130 frontal mugshots .* missing.*require_complete: false"):
        run(scface_root, preset="lai-lam")


def test_params_validation():
    with pytest.raises(ValueError, match="distances"):
        SCfaceParams(root="x", distances=[0])
    with pytest.raises(ValueError, match="overlap"):
        SCfaceParams(root="x", day_cameras=[1, 6])
    p = SCfaceParams(root="x", preset="lai-lam", resize="topleft-pad")
    assert p.require_complete is True and p.resize == "topleft-pad"  # explicit value beats the preset
