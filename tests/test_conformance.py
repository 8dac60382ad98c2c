"""Every registered plugin passes the conformance check of its kind (the checks plugin authors use), one test each."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from lrfr_plugins.manager import get_plugin_manager
from lrfr_plugins.registry import Registry
from lrfr_plugins.testing import CHECKS, check_head, check_plugin

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
BUILTINS = [(info.kind, info.name) for info in Registry.from_manager(get_plugin_manager(entry_points=False))]
#: seconds each even with no gradients; still run by default, deselect with -m "not slow"
DEEP = {("backbone", "iresnet100"), ("backbone", "iresnet200")}

SMALL = {  # keep expensive defaults small so the whole registry is checked in seconds
    ("dataset", "synthetic"): {"num_identities": 3, "images_per_identity": 2},
    ("protocol", "synthetic"): {"num_identities": 4, "images_per_identity": 2, "num_pairs": 20, "sizes": [112, 7]},
    ("protocol", "synthetic-survface"): {"num_identities": 6, "images_per_identity": 2, "num_pairs": 20},
    ("protocol", "synthetic-scface"): {"num_identities": 4, "cameras": 1},
    ("finetuner", "octuplet"): {"steps": 2, "p": 2, "k": 2, "eval_identities": 2},
    ("finetuner", "distill"): {"steps": 2, "batch_size": 4, "eval_images": 4, "warmup_steps": 0},
    ("finetuner", "derivenet"): {"steps": 2, "batch_size": 4, "eval_images": 4, "decoder_channels": 4},
}


def image_folder(tmp_path):
    faces = tmp_path / "faces"
    for identity in ("a", "b"):
        (faces / identity).mkdir(parents=True)
        Image.fromarray(np.full((112, 112, 3), 100, np.uint8)).save(faces / identity / "0.png")
    return {"root": str(faces)}


def onnx_backbone(tmp_path):
    from test_onnx_import import tiny_onnx

    return {"path": str(tiny_onnx(tmp_path / "tiny.onnx")[0])}


def qmul(tmp_path):
    from test_protocol_qmul_survface import make_fixture

    return {"root": str(make_fixture(tmp_path / "qmul")["root"])}


def scface(tmp_path):
    from test_protocol_scface import make_scface

    return {"root": str(make_scface(tmp_path / "scface"))}


def tinyface(tmp_path):
    from test_protocol_tinyface import make_tinyface

    return {"root": str(make_tinyface(tmp_path / "tinyface"))}


def lfw(tmp_path):
    from test_protocol_lfw import write_lfw

    return {"root": str(write_lfw(tmp_path / "lfw")[0]), "sizes": [112, 7]}


#: plugins that read files get small real ones, built only for their own test
DATA = {
    ("backbone", "onnx"): onnx_backbone,
    ("dataset", "insightface-rec"): lambda tmp_path: {"root": str(FIXTURES / "mxnet" / "faces_tiny")},
    ("dataset", "image-folder"): image_folder,
    ("protocol", "qmul-survface"): qmul,
    ("protocol", "scface"): scface,
    ("protocol", "tinyface"): tinyface,
    ("protocol", "lfw"): lfw,
    ("protocol", "bin"): lambda tmp_path: {"path": str(FIXTURES / "mxnet" / "verification" / "tiny_py3.bin"),
                                           "folds": 2, "sizes": [112, 7]},
}


def test_every_builtin_kind_has_a_check():
    assert {kind for kind, _ in BUILTINS} <= set(CHECKS), "a kind of plugin without a conformance check"
    assert len(BUILTINS) >= 30


@pytest.mark.parametrize("kind,name", [pytest.param(k, n, id=f"{k}-{n}", marks=[pytest.mark.slow] if (k, n) in DEEP
                                                    else []) for k, n in BUILTINS])
def test_conformance(kind, name, tmp_path):
    params = DATA[(kind, name)](tmp_path) if (kind, name) in DATA else SMALL.get((kind, name), {})
    check_plugin(kind, name, **params)


def test_check_head_catches_a_head_that_margins_label_minus_one_rows(registry):
    class Broken(type(registry.create("head", "arcface"))):
        def forward(self, cosine, labels, quality=None):
            return super().forward(cosine, labels.clamp_min(0), quality)  # treats -1 as class 0

    head = Broken(registry.get("head", "arcface").build_params({}))
    with pytest.raises(AssertionError, match="label -1 must only be scaled"):
        check_head(head)


def test_check_plugin_is_the_three_line_test_for_authors():
    from lrfr_plugins.errors import UnknownPluginError

    check_plugin("head", "arcface", margin=0.4)
    check_plugin("backbone", "tiny", embedding_size=16)
    with pytest.raises(UnknownPluginError, match="unknown head 'nope'"):
        check_plugin("head", "nope")
