"""Behaviour of the built-in synthetic face generator."""

import numpy as np
import pytest

from lrfr_plugins.synthetic import SyntheticFaceGenerator


def test_shape_dtype_and_empty_batch():
    gen = SyntheticFaceGenerator(seed=3)
    images = gen.render(np.array([0, 1, 2]), np.array([0, 0, 5]))
    assert images.shape == (3, 112, 112, 3)
    assert images.dtype == np.uint8
    assert images.std() > 10  # not a blank canvas
    assert gen.render(np.array([], dtype=int), np.array([], dtype=int)).shape == (0, 112, 112, 3)


def test_deterministic_across_calls_and_instances():
    ids, samples = np.array([4, 4, 9, 123456789]), np.array([0, 1, 0, 7])
    first = SyntheticFaceGenerator(seed=11).render(ids, samples)
    np.testing.assert_array_equal(first, SyntheticFaceGenerator(seed=11).render(ids, samples))
    assert not np.array_equal(first, SyntheticFaceGenerator(seed=12).render(ids, samples))


def test_independent_of_batch_composition_and_order():
    # 70 images span several internal chunks; reversing the order changes every chunk's
    # members, and single-image calls have no neighbours at all.
    gen = SyntheticFaceGenerator(seed=5)
    ids = np.arange(70) % 9
    samples = np.arange(70) * 3 + 1
    batch = gen.render(ids, samples)
    np.testing.assert_array_equal(gen.render(ids[::-1], samples[::-1])[::-1], batch)
    for k in (0, 33, 69):
        np.testing.assert_array_equal(gen.render(ids[k:k + 1], samples[k:k + 1])[0], batch[k])


def test_identity_code_is_deterministic_and_split_specific():
    train, test = SyntheticFaceGenerator(seed=0, split="train"), SyntheticFaceGenerator(seed=0, split="test")
    code = train.identity_code(7)
    assert code.keys() == SyntheticFaceGenerator(seed=0).identity_code(7).keys()
    for key, value in code.items():
        np.testing.assert_array_equal(value, train.identity_code(7)[key])
    assert not np.allclose(code["head"], test.identity_code(7)["head"])
    assert not np.allclose(code["head"], train.identity_code(8)["head"])


def test_train_and_test_identities_render_differently():
    ids, samples = np.arange(4), np.zeros(4, dtype=int)
    train = SyntheticFaceGenerator(seed=0, split="train").render(ids, samples)
    test = SyntheticFaceGenerator(seed=0, split="test").render(ids, samples)
    assert all(not np.array_equal(a, b) for a, b in zip(train, test))


def test_identity_survives_low_pass():
    # Coarse identity (head, skin, hair) must show in an 8x8-pooled face, the view that is
    # left after heavy down-sampling. Lighting is held fixed because, by design, its
    # variation is as large as the coarse identity differences.
    gen = SyntheticFaceGenerator(seed=1, illumination=0.0)
    n_ids, n_samples = 24, 6
    ids = np.repeat(np.arange(n_ids), n_samples)
    faces = gen.render(ids, np.tile(np.arange(n_samples), n_ids))[:, 16:96, 16:96]
    feats = faces.reshape(len(ids), 10, 8, 10, 8, 3).astype(np.float64).mean(axis=(2, 4)).reshape(len(ids), -1)
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    same = ids[:, None] == ids[None]
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    assert dist[same & off_diagonal].mean() < 0.92 * dist[~same].mean()


def test_nuisance_knobs_at_zero_freeze_the_face():
    # Only the background stays random: the face interior is identical across samples.
    gen = SyntheticFaceGenerator(seed=2, pose=0.0, expression=0.0, illumination=0.0, noise=0.0)
    a, b = gen.render(np.array([3, 3]), np.array([0, 1]))
    face = (slice(36, 88), slice(36, 76))
    np.testing.assert_array_equal(a[face], b[face])
    default = SyntheticFaceGenerator(seed=2).render(np.array([3, 3]), np.array([0, 1]))
    assert not np.array_equal(default[0][face], default[1][face])


def test_unknown_split_names_the_choices():
    with pytest.raises(ValueError, match="train.*test"):
        SyntheticFaceGenerator(split="val")


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pose"):
        SyntheticFaceGenerator(pose=-1.0)
    gen = SyntheticFaceGenerator()
    with pytest.raises(ValueError):
        gen.render(np.array([0, 1]), np.array([0]))
    with pytest.raises(TypeError):
        gen.render(np.array([0.5]), np.array([0]))
