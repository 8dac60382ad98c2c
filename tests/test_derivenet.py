"""DeriveNet finetuner: D-Margin logits, ReCent loss, loop-free centre update, memory, gradients, a short finetune."""

import math

import pytest
import torch
import torch.nn.functional as F

import lrfr_plugins
from lrfr_plugins.api import FinetuneContext
from lrfr_plugins.builtin.finetuners.derivenet import (
    Decoder,
    DeriveNet,
    DeriveNetHead,
    DeriveNetParams,
    centre_similarity,
    dmargin_logits,
    recent_loss,
    update_centres,
)
from lrfr_plugins.errors import DataError, LrfrError, ParamsError, UnknownPluginError
from lrfr_plugins.ops.preprocess import to_network_input
from lrfr_plugins.params import build_params


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on 2 shared cores, torch's 2 threads spin against other processes (5x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(**values):
    return DeriveNet(build_params(DeriveNetParams, values, owner="finetuner 'derivenet'"))


def context(backbone, dataset, seed=0):
    return FinetuneContext(backbone, dataset, [], torch.device("cpu"), torch.Generator().manual_seed(seed),
                           progress=False)


def tiny_backbone():
    return lrfr_plugins.create("backbone", "tiny", embedding_size=16, widths=[4, 8, 8, 16])


# ------------------------------------------------------------------------------------------- formulas


def test_dmargin_logits_add_centre_similarity_to_every_logit():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).view(3, 1, 1, 2)  # any (C, ...) shape
    labels = torch.tensor([0, 2])
    s = 1 / math.sqrt(2)
    d = torch.tensor([[1.0, 0.0, s],   # D(C_0, C_j)
                      [s, s, 1.0]])    # D(C_2, C_j)
    assert torch.allclose(centre_similarity(centres, labels), d)
    raw = torch.tensor([[1.0, 4.0, 3.0], [3.0, -2.0, 2.0]])  # |W_j||x|cos = W_j . x
    assert torch.allclose(dmargin_logits(x, w, centres, labels), raw + d)
    assert torch.allclose(dmargin_logits(x, w, centres, labels, d_weight=-0.5), raw - 0.5 * d)
    cos = F.normalize(x) @ F.normalize(w).T
    assert torch.allclose(dmargin_logits(x, w, centres, labels, scale=10.0), 10 * cos + d, atol=1e-6)
    # A class never seen (zero centre) has D = 0 with every class, not NaN.
    centres[1] = 0
    got = dmargin_logits(x, w, centres, labels)
    assert torch.isfinite(got).all() and got[0, 1] == raw[0, 1] and got[1, 1] == raw[1, 1]


def test_recent_loss_value():
    hr = torch.tensor([[1.0, 2.0], [0.0, 0.0]]).view(2, 1, 1, 2)
    recon = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    centres_y = torch.tensor([[1.0, 1.0], [1.0, -1.0]]).view(2, 1, 1, 2)
    # sample 0: |hr - g|^2 = 1 + 4 = 5, |g - C|^2 = 1 + 1 = 2 -> 7; sample 1: 2 + (0 + 4) = 6; mean 6.5
    assert recent_loss(recon, hr, centres_y, 1e-3).item() == pytest.approx(6.5e-3)


def test_centre_update_is_the_running_mean_and_ema():
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(6, 3, 2, 2, generator=gen), torch.tensor([0, 2, 2, 0, 2, 4])),
               (torch.randn(5, 3, 2, 2, generator=gen), torch.tensor([2, 1, 1, 0, 2]))]
    centres, counts = torch.zeros(5, 3, 2, 2), torch.zeros(5, dtype=torch.int64)
    for recon, labels in batches:
        update_centres(centres, counts, recon, labels)
    # By hand, loop-free: the mean of every row seen per class, as a one-hot matrix product.
    all_recon = torch.cat([b[0] for b in batches]).flatten(1)
    onehot = F.one_hot(torch.cat([b[1] for b in batches]), 5).float().T  # (C, N)
    n = onehot.sum(1)
    expected = (onehot @ all_recon) / n.clamp(min=1)[:, None]
    assert counts.tolist() == n.long().tolist() == [3, 2, 5, 0, 1]
    assert torch.allclose(centres.flatten(1), expected, atol=1e-6)
    assert (centres[3] == 0).all()  # unseen: still zero, not NaN

    m = 0.9
    centres, counts = torch.zeros(5, 3, 2, 2), torch.zeros(5, dtype=torch.int64)
    for recon, labels in batches:
        update_centres(centres, counts, recon, labels, momentum=m)
    r0, l0 = batches[0][0].flatten(1), batches[0][1]
    r1, l1 = batches[1][0].flatten(1), batches[1][1]
    mean = lambda r, l, c: r[l == c].mean(0)
    assert torch.allclose(centres[0].flatten(), m * mean(r0, l0, 0) + (1 - m) * mean(r1, l1, 0), atol=1e-6)
    assert torch.allclose(centres[1].flatten(), mean(r1, l1, 1), atol=1e-6)  # first seen: its batch mean
    assert torch.allclose(centres[4].flatten(), mean(r0, l0, 4), atol=1e-6)  # not in the second batch: kept


def test_centre_buffer_memory():
    head = DeriveNetHead(10572, 16, centre_size=28)
    assert head.centres.shape == (10572, 3, 28, 28) and head.centres.dtype == torch.float32
    assert head.centre_bytes == head.centres.numel() * 4 == 10572 * 3 * 28 * 28 * 4 == 99_461_376  # ~99 MB
    assert DeriveNetHead(5, 16, centre_size=112).centre_bytes == 5 * 3 * 112 * 112 * 4


@pytest.mark.parametrize("size", [28, 30, 7])
def test_decoder_output(size):
    out = Decoder(16, size, channels=4)(torch.randn(3, 16))
    assert out.shape == (3, 3, size, size) and out.abs().max() <= 1


# ------------------------------------------------------------------------------------------- gradients


def test_gradients_reach_the_backbone_from_both_losses():
    torch.manual_seed(0)
    backbone = tiny_backbone()
    head = DeriveNetHead(4, 16, centre_size=8, decoder_channels=4)
    images = torch.randint(0, 256, (6, 3, 112, 112), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    target = F.interpolate(to_network_input(images), size=(8, 8), mode="area")
    for part in ("ce", "recent"):
        backbone.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        out = head.losses(backbone(to_network_input(images)), target, labels, lam=1e-3, scale=None, d_weight=1.0,
                          momentum=None)
        out[part].backward()
        first, last = backbone.features[0].weight.grad, backbone.tail[2].weight.grad
        assert first is not None and first.abs().sum() > 0, part
        assert last is not None and last.abs().sum() > 0, part
    assert head.decoder.fc.weight.grad.abs().sum() > 0  # from "recent"


def test_one_step_updates_backbone_classifier_and_decoder():
    torch.manual_seed(0)
    dataset = lrfr_plugins.create("dataset", "synthetic", num_identities=3, images_per_identity=4)
    backbone = tiny_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    finetuner = make(steps=1, batch_size=4, eval_images=2, centre_size=8, decoder_channels=4,
                     centre_update="ema")
    metrics = finetuner.run(context(backbone, dataset))
    assert metrics["steps"] == 1 and metrics["initial_loss"] == metrics["final_loss"]
    assert not torch.equal(before["features.0.weight"], backbone.state_dict()["features.0.weight"])
    assert not torch.equal(before["tail.2.weight"], backbone.state_dict()["tail.2.weight"])
    head = finetuner.head
    assert head.weight.shape == (3, 16) and head.centres.shape == (3, 3, 8, 8)
    assert int(head.counts.sum()) == 4 and torch.isfinite(head.centres).all()
    assert backbone.training  # mode restored


# ------------------------------------------------------------------------------------------- finetune


@pytest.mark.parametrize("seed", [1, 4])
def test_finetune_lowers_the_loss_and_raises_the_lr_hr_cosine(seed):
    """A backbone first trained at full resolution only (lr_sizes [112]), then DeriveNet on the pyramid [16, 112].

    Normalised logits (scale 16): with the report's raw logits the cosine did not rise reliably on this tiny set-up
    (see the report). Measured over seeds 0-5 (30 + 30 steps): the cosine rose every time, by 0.005 to 0.14.
    """
    torch.manual_seed(seed)
    dataset = lrfr_plugins.create("dataset", "synthetic", num_identities=8, images_per_identity=8)
    backbone = tiny_backbone()
    common = {"steps": 30, "batch_size": 16, "eval_images": 16, "decoder_channels": 8, "lr": 0.05}
    make(lr_sizes=[112], **common).run(context(backbone, dataset, seed))
    metrics = make(lr_sizes=[16, 112], scale=16.0, **common).run(context(backbone, dataset, seed + 100))
    print(metrics)
    assert set(metrics) == {"steps", "initial_loss", "final_loss", "lr_hr_cosine_before", "lr_hr_cosine_after"}
    assert metrics["steps"] == 30
    assert metrics["final_loss"] < 0.5 * metrics["initial_loss"]
    assert metrics["lr_hr_cosine_after"] > metrics["lr_hr_cosine_before"] + 0.005


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("values, message", [
    ({"lr_sizes": []}, "lr_sizes must list at least one resolution"),
    ({"lr_sizes": [16, 0]}, "lr_sizes must be positive pixel sizes"),
    ({"lr_sizes": 16}, "lr_sizes: must be a list"),
    ({"centre_size": 2}, "centre_size: must be >= 4"),
    ({"centre_size": 224}, "centre_size: must be <= 112"),
    ({"optimizer": "adam"}, "optimizer: must be one of 'sgd', 'adamw'"),
    ({"centre_update": "median"}, "centre_update: must be one of 'mean', 'ema'"),
    ({"centre_momentum": 1.0}, "centre_momentum: must be < 1"),
    ({"lambda_recent": -1}, "lambda_recent: must be >= 0"),
    ({"scale": 0}, "scale: must be > 0"),
    ({"steps": 0}, "steps: must be >= 1"),
    ({"resize_down": "cubic"}, "unknown resize mode 'cubic'"),
    ({"resize_down": "bicubic-pil"}, "down 'bicubic-pil' always anti-aliases"),
    ({"lamda_recent": 1e-3}, "lamda_recent: unknown parameter; did you mean 'lambda_recent'"),
])
def test_bad_params_are_clear(values, message):
    with pytest.raises(ParamsError) as info:
        make(**values)
    assert message in str(info.value)


def test_too_few_images_for_the_held_out_batch():
    dataset = lrfr_plugins.create("dataset", "synthetic", num_identities=2, images_per_identity=2)
    with pytest.raises(DataError, match=r"dataset has 4 images, too few to hold out eval_images=32 and train on at "
                                        r"least 2; lower eval_images"):
        make().run(context(tiny_backbone(), dataset))


def test_registered_name_when_the_lead_has_registered_it():
    try:
        finetuner = lrfr_plugins.create("finetuner", "derivenet", steps=3)
    except UnknownPluginError:
        pytest.skip("derivenet is not registered yet")
    except LrfrError as exc:  # pragma: no cover
        raise AssertionError(exc)
    assert isinstance(finetuner, DeriveNet) and finetuner.params.steps == 3


def test_runs_from_a_recipe_finetune_slot(tmp_path):
    """Through the runner, registered by a test plugin (the built-in registration is the lead's)."""
    import textwrap
    import types

    from lrfr_plugins import hookimpl
    from lrfr_plugins.manager import Provider, get_plugin_manager
    from lrfr_plugins.recipe import load_recipe
    from lrfr_plugins.registry import Registry
    from lrfr_plugins.runner import execute, prepare_run_dir

    pm = get_plugin_manager(entry_points=False)
    module = types.ModuleType("lrfrtest_derivenet")
    module.lrfr_register_finetuners = hookimpl(lambda register: register("derivenet-test", DeriveNet))
    pm.register_plugin(module, "derivenet-test", Provider("lrfr-test-derivenet", "0.0.1", "lrfrtest_derivenet"))
    registry = Registry.from_manager(pm)
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""
        lrfr: 1
        name: derivenet
        data: {name: synthetic, params: {num_identities: 4, images_per_identity: 4}}
        backbone: {name: tiny, params: {embedding_size: 8, widths: [4, 4, 4, 4]}}
        head: {name: arcface}
        train: {epochs: 1, batch_size: 8, threads: 1}
        finetune: [{name: derivenet-test, params: {steps: 2, batch_size: 4, eval_images: 4, centre_size: 8,
                                                   decoder_channels: 4}}]
        eval: []
        export: {onnx: false}
        """))
    recipe = load_recipe(path, registry=registry)
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    result = execute(recipe, registry, tmp_path / "run", progress=False)
    (metrics,) = result.metrics["finetune"]
    assert metrics["finetuner"] == "derivenet-test" and metrics["steps"] == 2
    assert all(math.isfinite(metrics[k]) for k in ("initial_loss", "final_loss", "lr_hr_cosine_before",
                                                   "lr_hr_cosine_after"))
