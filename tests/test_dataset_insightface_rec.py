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


def test_getitems_returns_what_getitem_returns_including_skipped_corrupt_images(tmp_path, registry):
    from lrfr_plugins.engine.trainer import collate_readable
    from lrfr_plugins.formats import RecordReader

    pack = tmp_path / "pack"
    shutil.copytree(FIXTURES / "faces_tiny", pack)
    with RecordReader(pack / "train.rec") as reader:  # corrupt the JPEG of image key 2 (index 1) in place
        start = reader.offset(2) + 8 + 24 + 200
    with open(pack / "train.rec", "r+b") as fh:
        fh.seek(start)
        fh.write(b"\x00" * 2000)
    data = registry.create("dataset", "insightface-rec", root=str(pack), skip_corrupt=True)
    indices = [5, 1, 0, 3, 1, 2, 4]
    batch = data.__getitems__(indices)
    assert len(batch) == len(indices)
    for i, item in zip(indices, batch):
        single = data[i]
        if single is None:
            assert item is None and i == 1
            continue
        assert item[1] == single[1] and item[0].dtype == torch.uint8 and torch.equal(item[0], single[0])
    images, _, skipped = collate_readable(batch)
    assert skipped == 2 and images.shape == (5, 3, 112, 112) and images.is_contiguous()
    assert torch.equal(images, torch.stack([data[i][0] for i in indices if i != 1]))
    strict = registry.create("dataset", "insightface-rec", root=str(pack))
    with pytest.raises(DataError, match=r"record key 2: cannot decode the image .*skip_corrupt: true"):
        strict.__getitems__([0, 1])
    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=1, collate_fn=collate_readable)
    assert sum(s for _, _, s in loader) == 1  # the DataLoader goes through __getitems__ in its workers
