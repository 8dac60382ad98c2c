"""The insightface-rec dataset on a pack written by mxnet 1.9.1 (tests/fixtures/mxnet/faces_tiny)."""

import hashlib
import io
import json
import pathlib
import shutil

import numpy as np
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
    from lrfr_plugins.engine.batches import collate_readable
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
    # labels() reads the record headers, not the images: the corrupt one keeps its label
    labels = data.labels()
    assert labels.dtype == np.int64 and labels.tolist()[:1] + labels.tolist()[2:] == \
        [data[i][1] for i in range(len(data)) if i != 1]
    assert labels[1] == RecordReader(pack / "train.rec").read_record(2)[0].label


def _jpeg(rgb, **save):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", **save)
    return buf.getvalue()


def _pil_rgb(data):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _jpegs():
    """Face-sized JPEGs of every kind the decoders meet: YCbCr 4:4:4 / 4:2:2 / 4:2:0 at two qualities, smooth and
    noisy, progressive, another size, and greyscale."""
    import numpy as np

    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), 8, 0), 8, 1)
    noise = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    cases = [_jpeg(img, quality=q, subsampling=sub) for img in (smooth, noise) for q in (75, 95) for sub in (0, 1, 2)]
    return noise, cases + [_jpeg(noise, quality=90, progressive=True), _jpeg(noise[:100, :90], quality=95),
                           _jpeg(noise[..., 0], quality=90)]


@pytest.mark.parametrize("decoder", ["pil", "simplejpeg"])
def test_fast_jpeg_decoding_gives_pils_pixels(decoder, monkeypatch):
    """JPEGs skip ``Image.open``/``load``: PIL's own decoder on the bytes, or simplejpeg with the ``[fast]`` extra.
    Same pixels as the open path, into the batch slot when it fits; CMYK, PNG and undecodable data take the open
    path as before (the PIL route also leaves greyscale to it)."""
    import numpy as np
    from PIL import Image

    from lrfr_plugins.formats import images

    if decoder == "simplejpeg":
        pytest.importorskip("simplejpeg")
    monkeypatch.setattr(images, "_SIMPLEJPEG", None if decoder == "simplejpeg" else False)
    noise, cases = _jpegs()
    for k, data in enumerate(cases):
        grey = k == len(cases) - 1
        assert (images._decode_fast(data, None) is None) == (grey and decoder == "pil")
        slot = np.zeros((2, 112, 112, 3), dtype=np.uint8)[1]
        got = images.decode_image(data, out=slot)
        assert np.array_equal(got, _pil_rgb(data)) and got.flags.writeable
        assert (got is slot) == (got.shape == (112, 112, 3))
    cmyk, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(noise).convert("CMYK").save(cmyk, format="JPEG")
    Image.fromarray(noise).save(png, format="PNG")
    for other in (cmyk.getvalue(), png.getvalue()):
        assert images._decode_fast(other, None) is None
        assert np.array_equal(images.decode_image(other), _pil_rgb(other))
    broken = cases[0][:300] + b"\x00" * 500
    assert images._decode_fast(broken, None) is None and images._jpeg_frame(cases[0][:150]) is None
    with pytest.raises(DataError, match="cannot decode"):
        images.decode_image(broken)


def test_items_are_the_same_with_each_jpeg_decoder(monkeypatch, registry):
    """The open path, PIL's decoder on the bytes and (when installed) simplejpeg give the mxnet fixture's items."""
    from lrfr_plugins.formats import images

    data = registry.create("dataset", "insightface-rec", root=str(FIXTURES / "faces_tiny"))
    default = [data[i][0] for i in range(len(data))]
    monkeypatch.setattr(images, "_decode_fast", lambda data, out: None)  # the open path only
    assert all(torch.equal(data[i][0], default[i]) for i in range(len(data)))
    assert all(torch.equal(a, b[0]) for a, b in zip(default, data.__getitems__(list(range(len(data))))))
    monkeypatch.undo()
    monkeypatch.setattr(images, "_SIMPLEJPEG", False)  # as when the optional package is not installed
    assert all(torch.equal(a, b[0]) for a, b in zip(default, data.__getitems__(list(range(len(data))))))
