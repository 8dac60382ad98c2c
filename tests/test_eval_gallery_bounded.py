"""Bounded-memory gallery evaluation: lrfr_plugins.ops.batches and the tinyface protocol on a fixture (decoded images
never more than batch_size at a time, one progress bar per phase, float16 embeddings only past the memory budget)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrfr_plugins import create
from lrfr_plugins.builtin.protocols import tinyface as tinyface_module
from lrfr_plugins.ops.batches import embed_batches, embedding_dtype, iter_batches

from test_protocol_tinyface import make_embedder, make_tinyface

pytest.importorskip("scipy.io")


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 112, 112), dtype=torch.uint8, generator=g)


def _linear_embedder(dim=7, seed=1):
    w = torch.randn(3 * 112 * 112, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def embed(images):
        return (images.flatten(1).double() @ w).numpy()
    return embed


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10, 64])
@pytest.mark.parametrize("flip_sum", [False, True])
def test_batched_embeddings_equal_one_big_batch(batch_size, flip_sum):
    images = _images(10)
    embed = _linear_embedder()
    items = list(range(10))
    sizes = []

    def load(chunk):
        sizes.append(len(chunk))
        return images[list(chunk)]

    out = embed_batches(items, load, embed, batch_size=batch_size, flip_sum=flip_sum, normalise=True)
    whole = np.asarray(embed(images), np.float32)
    if flip_sum:
        whole = whole + np.asarray(embed(images.flip(-1)), np.float32)
    whole = (whole / np.linalg.norm(whole, axis=1, keepdims=True)).astype(np.float32)
    assert out.dtype == np.float32 and out.shape == (10, 7)
    np.testing.assert_array_equal(out, whole)
    assert max(sizes) == min(batch_size, 10) and sum(sizes) == 10


def test_iter_batches_order_and_empty():
    assert [(s, list(b)) for s, b in iter_batches([1, 2, 3, 4, 5], 2, list)] == [(0, [1, 2]), (2, [3, 4]), (4, [5])]
    assert list(iter_batches([], 4, list)) == []
    empty = embed_batches([], lambda c: None, _linear_embedder(), batch_size=4)
    assert empty.shape == (0, 0)
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_batches([1], 0, list))


def test_embedding_dtype_follows_the_budget():
    assert embedding_dtype(157_871 + 3_728, 512) == np.float32          # 316 MiB < 2 GiB
    assert embedding_dtype(1_000, 512, budget_mb=1.0) == np.float16      # 1.95 MiB > 1 MiB
    assert embedding_dtype(512, 512, budget_mb=1.0) == np.float32        # exactly 1 MiB fits
    out = embed_batches(list(range(6)), lambda c: _images(len(c)), _linear_embedder(), batch_size=4,
                        normalise=True, budget_mb=1e-6)
    assert out.dtype == np.float16


def test_tinyface_never_holds_more_than_batch_size_decoded_images(tmp_path, monkeypatch):
    make_tinyface(tmp_path)  # 3 probes, 4 gallery, 2 distractors
    live = {"now": 0, "max": 0}
    real_decode = tinyface_module.decode_image

    def counting_decode(data, where):
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        return real_decode(data, where)

    inner = make_embedder()
    seen = []

    def embed(images):
        seen.append(images.shape[0])
        live["now"] = 0  # a batch reached the embedder: the next decodes start a new batch
        return inner(images)

    monkeypatch.setattr(tinyface_module, "decode_image", counting_decode)
    result = create("protocol", "tinyface", root=str(tmp_path), batch_size=2).evaluate(embed, progress=False)
    assert live["max"] <= 2 and max(seen) <= 2 and sum(seen) == 9
    reference = create("protocol", "tinyface", root=str(tmp_path)).evaluate(make_embedder(), progress=False)
    assert result.results == reference.results  # batching does not change the numbers
    assert result.settings["embedding_dtype"].startswith("float32")


def test_tinyface_float16_past_the_budget_keeps_the_ranks(tmp_path):
    make_tinyface(tmp_path)
    small = create("protocol", "tinyface", root=str(tmp_path), embedding_budget_mb=1e-6).evaluate(
        make_embedder(), progress=False)
    reference = create("protocol", "tinyface", root=str(tmp_path)).evaluate(make_embedder(), progress=False)
    assert small.settings["embedding_dtype"].startswith("float16")
    for k in ("rank1", "rank5", "rank10", "rank20"):
        assert small.results["identification"][k] == reference.results["identification"][k]
    assert small.results["identification"]["map"] == pytest.approx(reference.results["identification"]["map"])


def test_tinyface_progress_bars_per_phase(tmp_path, capsys):
    make_tinyface(tmp_path)
    create("protocol", "tinyface", root=str(tmp_path)).evaluate(make_embedder(), progress=True)
    err = capsys.readouterr().err
    for phase in ("tinyface: embed probes", "tinyface: embed gallery", "tinyface: score"):
        assert phase in err
    create("protocol", "tinyface", root=str(tmp_path)).evaluate(make_embedder(), progress=False)
    assert "tinyface:" not in capsys.readouterr().err
