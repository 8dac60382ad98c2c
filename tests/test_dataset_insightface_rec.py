"""The insightface-rec dataset on a pack written by mxnet 1.9.1 (tests/fixtures/mxnet/faces_tiny)."""

import hashlib
import json
import pathlib
import shutil

import pytest
import torch

from lrfr_plugins.errors import DataError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "mxnet"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["faces_tiny"]


def test_items_match_what_mxnet_decodes(registry):
    data = registry.create("dataset", "insightface-rec", root=str(FIXTURES / "faces_tiny"))
    assert len(data) == len(EXPECTED["image_keys"]) == 6 and data.num_classes == 3  # from property and record 0
    for i, key in enumerate(EXPECTED["image_keys"]):
        image, label = data[i]
        record = EXPECTED["records"][str(key)]
        assert image.dtype == torch.uint8 and image.shape == (3, 112, 112)
        rgb = image.permute(1, 2, 0).contiguous().numpy()
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == record["mx_imdecode_rgb"]["sha256"]
        header_label = record["header"]["label"] if record["header"]["flag"] == 0 else record["header"]["label"][0]
        assert label == int(header_label)
    assert [data[i][1] for i in range(6)] == [0, 0, 1, 1, 2, 2]


def test_class_count_disagreement_and_missing_property_are_clear(tmp_path, registry):
    pack = tmp_path / "pack"
    shutil.copytree(FIXTURES / "faces_tiny", pack)
    (pack / "property").write_text("10575,112,112\n")
    with pytest.raises(DataError, match=r"num_classes is 10575 but record 0 .* announces 3 identities"):
        registry.create("dataset", "insightface-rec", root=str(pack))
    with pytest.raises(DataError, match=r"train.rec"):
        registry.create("dataset", "insightface-rec", root=str(tmp_path / "nowhere"))
