"""The kit's conformance tests: three lines per plugin, the checks of lrfr_plugins.testing (run after installing
the kit: pip install -e examples/lrfr-lowres-kit && pytest examples/lrfr-lowres-kit/tests)."""

from lrfr_lowres_kit.demo_data import write_pairs_folder
from lrfr_plugins.testing import check_plugin


def test_elasticface_arc_head():
    check_plugin("head", "elasticface-arc")
    check_plugin("head", "elasticface-arc", sort="cosine")


def test_tenengrad_quality():
    check_plugin("quality", "tenengrad")


def test_blur_jpeg_degradation():
    check_plugin("degradation", "blur-jpeg", fraction=1.0)


def test_cross_res_triplet_finetuner():
    check_plugin("finetuner", "cross-res-triplet", steps=2, batch_size=8, eval_images=4)


def test_pairs_csv_protocol(tmp_path):
    write_pairs_folder(tmp_path, identities=4, per_identity=3, pairs=20)
    check_plugin("protocol", "pairs-csv", root=str(tmp_path), sizes=[112, 14])
