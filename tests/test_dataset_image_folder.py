"""The image-folder dataset: sorted identity labels, list files, resizing with a warning, clear errors."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lrfr_plugins.errors import DataError
from lrfr_plugins.testing import check_dataset


def write_face(path, size=112, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)  # PNG: lossless, so pixels can be compared
    return pixels


def make_folder(root):
    faces = {}
    for identity, n in (("bob", 2), ("alice", 3), ("carol", 1)):
        for k in range(n):
            faces[(identity, k)] = write_face(root / identity / f"{k}.png", seed=hash((identity, k)) % 1000)
    (root / "alice" / "notes.txt").write_text("not an image")
    return faces


def test_labels_follow_sorted_identity_folders_and_pixels_are_exact(tmp_path, registry):
    faces = make_folder(tmp_path)
    data = registry.create("dataset", "image-folder", root=str(tmp_path))
    check_dataset(data)
    assert len(data) == 6 and data.num_classes == 3
    assert data.index.class_names == ["alice", "bob", "carol"]  # torchvision ImageFolder / arcface_torch order
    assert [data[i][1] for i in range(6)] == [0, 0, 0, 1, 1, 2]
    assert data.labels().tolist() == [0, 0, 0, 1, 1, 2]
    image, label = data[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 112, 112)
    assert np.array_equal(image.permute(1, 2, 0).numpy(), faces[("bob", 0)])


def test_list_file_with_the_studys_label_column(tmp_path, registry):
    make_folder(tmp_path)
    (tmp_path / "train.txt").write_text("bob/1.png 4\nalice/0.png 0\n\n")
    data = registry.create("dataset", "image-folder", root=str(tmp_path), list_file="train.txt")
    assert len(data) == 2 and [data[0][1], data[1][1]] == [4, 0] and data.num_classes == 5


def test_list_file_without_labels_numbers_the_folders(tmp_path, registry):
    make_folder(tmp_path)
    (tmp_path / "list.txt").write_text("carol/0.png\nalice/2.png\n")
    data = registry.create("dataset", "image-folder", root=str(tmp_path), list_file=str(tmp_path / "list.txt"))
    assert [data[0][1], data[1][1]] == [1, 0] and data.index.class_names == ["alice", "carol"]


def test_other_sizes_and_grey_images_are_converted_with_one_warning(tmp_path, registry, caplog):
    write_face(tmp_path / "a" / "0.png", size=96, mode="L")
    write_face(tmp_path / "a" / "1.png", size=128)
    data = registry.create("dataset", "image-folder", root=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="lrfr"):
        shapes = [data[i][0].shape for i in range(2)]
    assert shapes == [(3, 112, 112)] * 2
    warnings = [r for r in caplog.records if "not an aligned 112x112 face" in r.getMessage()]
    assert len(warnings) == 1 and "0.png is 96x96" in warnings[0].getMessage()


def test_bad_inputs_name_the_file_and_the_fix(tmp_path, registry):
    with pytest.raises(DataError, match=r"not a folder. An image folder holds one sub-folder per identity"):
        registry.create("dataset", "image-folder", root=str(tmp_path / "missing"))
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty: no images found"):
        registry.create("dataset", "image-folder", root=str(tmp_path / "empty"))
    make_folder(tmp_path / "f")
    (tmp_path / "f" / "bad.txt").write_text("bob/0.png 1\nbob/9.png 1\n")
    with pytest.raises(DataError, match=r"bad.txt:2: .*bob/9.png does not exist"):
        registry.create("dataset", "image-folder", root=str(tmp_path / "f"), list_file="bad.txt")
    (tmp_path / "f" / "mixed.txt").write_text("bob/0.png 1\nbob/1.png\n")
    with pytest.raises(DataError, match=r"mixed.txt:2: expected <path> <label>"):
        registry.create("dataset", "image-folder", root=str(tmp_path / "f"), list_file="mixed.txt")
    (tmp_path / "f" / "bob" / "2.png").write_bytes(b"not a png")
    data = registry.create("dataset", "image-folder", root=str(tmp_path / "f"))
    with pytest.raises(DataError, match=r"2.png"):
        data[5]
