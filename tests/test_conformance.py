"""Every registered plugin passes the conformance check of its kind (the checks plugin authors use)."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from lrfr_plugins.testing import CHECKS, check_head

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SMALL = {  # keep expensive defaults small so the whole registry is checked in seconds
    ("dataset", "synthetic"): {"num_identities": 3, "images_per_identity": 2},
    ("protocol", "synthetic"): {"num_identities": 4, "images_per_identity": 2, "num_pairs": 20, "sizes": [112, 7]},
    ("protocol", "synthetic-survface"): {"num_identities": 6, "images_per_identity": 2, "num_pairs": 20},
    ("protocol", "synthetic-scface"): {"num_identities": 4, "cameras": 1},
}


def data_roots(tmp_path):
    """Plugins that read files get small real ones: the committed mxnet-written pack and a tiny image folder."""
    faces = tmp_path / "faces"
    for identity in ("a", "b"):
        (faces / identity).mkdir(parents=True)
        Image.fromarray(np.full((112, 112, 3), 100, np.uint8)).save(faces / identity / "0.png")
    from test_protocol_lfw import write_lfw
    from test_protocol_qmul_survface import make_fixture
    from test_protocol_scface import make_scface
    from test_onnx_import import tiny_onnx

    return {("backbone", "onnx"): {"path": str(tiny_onnx(tmp_path / "tiny.onnx")[0])},
            ("dataset", "insightface-rec"): {"root": str(FIXTURES / "mxnet" / "faces_tiny")},
            ("dataset", "image-folder"): {"root": str(faces)},
            ("protocol", "qmul-survface"): {"root": str(make_fixture(tmp_path / "qmul")["root"])},
            ("protocol", "scface"): {"root": str(make_scface(tmp_path / "scface"))},
            ("protocol", "lfw"): {"root": str(write_lfw(tmp_path / "lfw")[0]), "sizes": [112, 7]},
            ("protocol", "bin"): {"path": str(FIXTURES / "mxnet" / "verification" / "tiny_py3.bin"), "folds": 2,
                                  "sizes": [112, 7]}}


def test_every_registered_plugin_conforms(registry, tmp_path):
    checked = 0
    params = {**SMALL, **data_roots(tmp_path)}
    for info in registry:
        check = CHECKS.get(info.kind)
        if check is None:
            continue
        check(registry.create(info.kind, info.name, **params.get((info.kind, info.name), {})))
        checked += 1
    assert checked >= 5


def test_check_head_catches_a_head_that_margins_label_minus_one_rows(registry):
    class Broken(type(registry.create("head", "arcface"))):
        def forward(self, cosine, labels, quality=None):
            return super().forward(cosine, labels.clamp_min(0), quality)  # treats -1 as class 0

    head = Broken(registry.get("head", "arcface").build_params({}))
    with pytest.raises(AssertionError, match="label -1 must only be scaled"):
        check_head(head)


def test_check_plugin_is_the_three_line_test_for_authors():
    from lrfr_plugins.errors import UnknownPluginError
    from lrfr_plugins.testing import check_plugin

    check_plugin("head", "arcface", margin=0.4)
    check_plugin("backbone", "tiny", embedding_size=16)
    with pytest.raises(UnknownPluginError, match="unknown head 'nope'"):
        check_plugin("head", "nope")
