"""The conformance checks fail plugins that break what the host relies on, each with a message that says what."""

import pytest
import torch

import lrfr_plugins
from lrfr_plugins.api import DegradedBatch, Finetuner, Protocol, ProtocolResult, Quality
from lrfr_plugins.builtin.heads.arcface import ArcFace
from lrfr_plugins.builtin.quality.laplacian import Laplacian
from lrfr_plugins.testing import (check_degradation, check_finetuner, check_head, check_plugin, check_protocol,
                                  check_quality)


# ------------------------------------------------------------------------------------------------ quality
class NoMaskKeyword(Quality):
    """The old call: quality(images); the trainer's lr_mask= is a TypeError."""

    def __call__(self, images):
        return images.float().mean(dim=(1, 2, 3))


class EmbeddingsOnly(Quality):
    """Uses embeddings but does not take the lr_mask= the trainer passes with them."""

    uses_embeddings = True

    def __call__(self, images, *, embeddings=None):
        return embeddings.norm(dim=1)


class BatchNormalised(Laplacian):
    """Cacheable, but each value is divided by the batch mean: an image's value depends on the others."""

    def __call__(self, images, *, lr_mask=None):
        q = super().__call__(images, lr_mask=lr_mask)
        return q / q.mean()


class FlipDependent(Quality):
    """Cacheable, but reads the left half only: a flipped image gets another value."""

    cacheable = True

    def __call__(self, images, *, lr_mask=None):
        return images[..., : images.shape[-1] // 2].float().mean(dim=(1, 2, 3))


class WrongShape(Quality):
    def __call__(self, images, *, lr_mask=None):
        return images.float().mean(dim=(1, 2, 3)).unsqueeze(1)  # (N, 1)


class Random(Quality):
    def __call__(self, images, *, lr_mask=None):
        return torch.rand(images.shape[0])


@pytest.mark.parametrize("estimator,message", [
    (NoMaskKeyword(None), r"the host calls estimator\(images, lr_mask=lr_mask\)"),
    (EmbeddingsOnly(None), r"the host calls estimator\(images, lr_mask=lr_mask, embeddings=embeddings\)"),
    (BatchNormalised(Laplacian.Params()), r"cacheable = True, but image \d has quality .* in a batch and .* alone"),
    (FlipDependent(None), "cacheable = True, but a horizontal flip changes the quality"),
    (WrongShape(None), r"must return a tensor of shape \(6,\)"),
    (Random(None), "must be a deterministic function of its input"),
], ids=["refuses-lr_mask", "embeddings-without-lr_mask", "batch-dependent", "flip-dependent", "shape", "random"])
def test_check_quality_fails(estimator, message):
    with pytest.raises(AssertionError, match=message):
        check_quality(estimator)


def test_batch_normalised_quality_passes_when_not_cacheable():
    """Depending on the batch is fine for an estimator the host never caches: the check asks it of cacheable ones."""
    estimator = BatchNormalised(Laplacian.Params())
    estimator.cacheable = False
    check_quality(estimator)


# ------------------------------------------------------------------------------------------- degradations
def _blur(images):
    kernel = torch.full((3, 1, 3, 3), 1 / 9)
    return torch.nn.functional.conv2d(images.float(), kernel, padding=1, groups=3).round().clamp(0, 255).to(
        torch.uint8)


class UnmarkedBlur:
    """Blurs half the batch and reports only lr_mask False: the quality cache would keep the sharp value."""

    def __call__(self, images, generator):
        pick = torch.randperm(images.shape[0], generator=generator)[: images.shape[0] // 2]
        out = images.clone()
        out[pick] = _blur(images[pick])
        return DegradedBatch(out, torch.zeros(images.shape[0], dtype=torch.bool))


class MarkedBlur(UnmarkedBlur):
    """The same blur, marked in changed (not low-resolution): conforms."""

    def __call__(self, images, generator):
        out = super().__call__(images, generator)
        return DegradedBatch(out.images, out.lr_mask, changed=(out.images != images).flatten(1).any(1))


class InPlace:
    def __call__(self, images, generator):
        mask = torch.rand(images.shape[0], generator=generator) < 0.5
        images[mask] = _blur(images[mask])
        return DegradedBatch(images, mask)


class GlobalRandom:
    """Draws from torch's global RNG instead of the generator it is given."""

    def __call__(self, images, generator):
        mask = torch.rand(images.shape[0]) < 0.5
        out = images.clone()
        out[mask] = _blur(images[mask])
        return DegradedBatch(out, mask)


class FloatMask:
    def __call__(self, images, generator):
        return DegradedBatch(images, torch.zeros(images.shape[0]))


@pytest.mark.parametrize("degradation,message", [
    (UnmarkedBlur(), r"images \[.*\] differ from the input but are not marked in DegradedBatch.changed"),
    (InPlace(), "modified its input in place"),
    (GlobalRandom(), r"not deterministic: the same CPU generator \(seed 1\) gave different results"),
    (FloatMask(), r"lr_mask must be a bool tensor of shape \(8,\)"),
], ids=["unmarked-blur", "in-place", "global-rng", "float-mask"])
def test_check_degradation_fails(degradation, message):
    with pytest.raises(AssertionError, match=message):
        check_degradation(degradation)


def test_a_blur_marked_in_changed_conforms():
    check_degradation(MarkedBlur())


# --------------------------------------------------------------------------------------------- finetuners
class Idle(Finetuner):
    """Returns metrics without training anything."""

    def needs_labels(self):
        return False

    def run(self, context):
        return {"steps": 0}


class Trains(Finetuner):
    """One SGD step on the embeddings' norm; ``metrics`` is what it returns."""

    metrics = {"steps": 1}
    labels = False

    def needs_labels(self):
        return self.labels

    def run(self, context):
        images = torch.stack([context.dataset[i][0] for i in range(4)]).float() / 127.5 - 1
        loss = context.backbone(images).norm(dim=1).mean()
        loss.backward()
        with torch.no_grad():
            for p in context.backbone.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
        return self.metrics


class TensorMetrics(Trains):
    metrics = {"final_loss": torch.tensor(0.5)}


class NaNMetrics(Trains):
    metrics = {"final_loss": float("nan")}


class NonFinite(Trains):
    def run(self, context):
        with torch.no_grad():
            next(context.backbone.parameters()).fill_(float("inf"))
        return {}


class LeavesEval(Trains):
    def run(self, context):
        out = super().run(context)
        context.backbone.eval()
        return out


class SaysNoLabelsButReadsThem(Trains):
    """needs_labels() False, but reads labels and the classifier: on data without identities it breaks."""

    def run(self, context):
        labels = torch.tensor([context.dataset[i][1] for i in range(4)])
        if (labels < 0).any() or context.classifier is None:
            raise RuntimeError("no labels")
        return super().run(context)


@pytest.mark.parametrize("finetuner,message", [
    (Idle(None), "run\\(\\) left every weight of context.backbone as it was"),
    (TensorMetrics(None), "the metrics run\\(\\) returned: not JSON-serialisable"),
    (NaNMetrics(None), "the metrics run\\(\\) returned: not JSON-serialisable"),
    (NonFinite(None), "non-finite weights"),
    (LeavesEval(None), "left the backbone in eval mode"),
], ids=["no-training", "tensor-metrics", "nan-metrics", "non-finite", "leaves-eval"])
def test_check_finetuner_fails(finetuner, message):
    with pytest.raises(AssertionError, match=message):
        check_finetuner(finetuner)


def test_check_finetuner_runs_a_label_free_finetuner_without_labels():
    with pytest.raises(AssertionError, match=r"run\(\) failed on data without identities .* needs_labels\(\) is False: "
                                             r"RuntimeError: no labels"):
        check_finetuner(SaysNoLabelsButReadsThem(None))
    honest = SaysNoLabelsButReadsThem(None)
    honest.labels = True  # says it needs labels: gets them, and the classifier
    check_finetuner(honest)


# ---------------------------------------------------------------------------------------------- protocols
class Stub(Protocol):
    """Embeds 4 images and reports what ``make`` builds from the embeddings."""

    def __init__(self, make, images=None):
        super().__init__(None)
        self.make = make
        self.images = torch.zeros(4, 3, 112, 112, dtype=torch.uint8) if images is None else images

    def evaluate(self, embed, *, progress=True):
        return self.make(embed(self.images))


def good(e):
    return ProtocolResult("stub", [{"resolution": "112px", "accuracy": 0.5}], {"folds": 1},
                          {"112": {"accuracy": 0.5, "pairs": 2}}, {"roc:112": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}})


def test_a_well_formed_stub_protocol_conforms():
    check_protocol(Stub(good))


@pytest.mark.parametrize("protocol,message", [
    (Stub(lambda e: ProtocolResult("stub", [], results={"112": {"accuracy": 0.5}})), "at least one row"),
    (Stub(lambda e: ProtocolResult("stub", [{"a": 1}], results={"112": {"accuracy": "0.5"}})),
     r"results\['112'\]\['accuracy'\] = '0.5' \(str\); metrics must be finite floats"),
    (Stub(lambda e: ProtocolResult("stub", [{"a": 1}], results={"112": {"accuracy": e[:1, 0]}})),
     r"results\['112'\]\['accuracy'\] = array"),
    (Stub(lambda e: ProtocolResult("stub", [{"a": 1}], results={"112": {"accuracy": float("nan")}})),
     r"metrics must be finite"),
    (Stub(lambda e: ProtocolResult("stub", [{"a": 1}])), "must map condition -> metrics"),
    (Stub(lambda e: ProtocolResult("stub", [{"a": 1}], results={"112": {"accuracy": 0.5}},
                                   curves={"roc:112": {"fpr": [0.0, 1.0], "tpr": [1.0]}})), "equal lengths"),
    (Stub(lambda e: ProtocolResult("stub", [{"a": 1}], {"path": object()}, results={"112": {"accuracy": 0.5}})),
     r"as_dict\(\): not JSON-serialisable"),
    (Stub(good, images=torch.zeros(4, 3, 112, 112)), "the embedder got Tensor torch.float32"),
    (Stub(good, images=torch.zeros(4, 3, 56, 56, dtype=torch.uint8)), r"\(4, 3, 56, 56\)"),
    (Stub(lambda e: {"rows": [{"a": 1}]}), "must return a ProtocolResult"),
], ids=["no-rows", "str-metric", "array-metric", "nan-metric", "no-results", "curve-lengths", "settings-object",
        "float-images", "small-images", "not-a-result"])
def test_check_protocol_fails(protocol, message):
    with pytest.raises(AssertionError, match=message):
        check_protocol(protocol)


def test_check_protocol_fails_a_protocol_that_draws_from_the_global_rng():
    def drawn(e):
        accuracy = float(torch.rand(()))  # folds or pairs drawn from torch's global RNG
        return ProtocolResult("stub", [{"accuracy": accuracy}], results={"112": {"accuracy": accuracy}})

    with pytest.raises(AssertionError, match="a second evaluate"):
        check_protocol(Stub(drawn))


# -------------------------------------------------------------------------------------------------- heads
def target_noise(logits, labels, noise):
    """ElasticFace-like: a random change of each row's target logit only (rows of label -1 stay scaled)."""
    rows = (labels >= 0).nonzero().squeeze(1)
    out = logits.clone()
    out[rows, labels[rows]] += 0.1 * noise[rows]
    return out


class NoisyArcFace(ArcFace):
    """Declares stochastic = True and takes generator=, but draws its noise from the global RNG."""

    stochastic = True

    def forward(self, cosine, labels, quality=None, *, generator):
        return target_noise(super().forward(cosine, labels, quality), labels, torch.randn(cosine.shape[0]))


class SeededNoisyArcFace(ArcFace):
    stochastic = True

    def forward(self, cosine, labels, quality=None, *, generator):
        noise = torch.randn(cosine.shape[0], generator=generator, device=generator.device)
        return target_noise(super().forward(cosine, labels, quality), labels, noise)


class UndeclaredNoise(ArcFace):
    """Draws random numbers without declaring stochastic = True: the host passes it no generator."""

    def forward(self, cosine, labels, quality=None):
        return target_noise(super().forward(cosine, labels, quality), labels, torch.randn(cosine.shape[0]))


class StochasticWithoutKeyword(ArcFace):
    stochastic = True


def test_check_head_fails_a_stochastic_head_that_ignores_the_generator():
    with pytest.raises(AssertionError, match="the same generator seed gave different logits"):
        check_head(NoisyArcFace(ArcFace.Params()))


def test_check_head_passes_a_stochastic_head_that_draws_from_the_generator():
    check_head(SeededNoisyArcFace(ArcFace.Params()))


def test_check_head_fails_random_numbers_without_stochastic():
    with pytest.raises(AssertionError, match="sets stochastic = True"):
        check_head(UndeclaredNoise(ArcFace.Params()))


def test_check_head_fails_a_stochastic_head_without_the_generator_keyword():
    with pytest.raises(AssertionError, match=r"must accept head\(cosine, labels, quality, generator=g\)"):
        check_head(StochasticWithoutKeyword(ArcFace.Params()))


def test_check_head_gives_a_head_quality_in_its_calibrated_units():
    seen = []

    class Recording(ArcFace):
        needs_quality = True
        calibrated_quality = "laplacian"

        def forward(self, cosine, labels, quality=None):
            seen.append(quality)
            return super().forward(cosine, labels)

    check_head(Recording(ArcFace.Params()))
    assert all(q is not None and q.shape == (6,) for q in seen)
    assert max(float(q.max()) for q in seen) > 1.5  # mean |Laplacian| of faces, not uniform [0, 1)

    Recording.calibrated_quality = "no-such-estimator"
    with pytest.raises(AssertionError, match="calibrated_quality = 'no-such-estimator' must name an installed"):
        check_head(Recording(ArcFace.Params()))


# ----------------------------------------------------------------------------------------------- plugins
def test_check_plugin_refuses_a_kind_it_has_no_check_for():
    with pytest.raises(ValueError, match=r"no conformance check for plugin kind 'heads': check_plugin checks head, "
                                         r"backbone, degradation, dataset, protocol, quality, finetuner"):
        check_plugin("heads", "arcface")


def test_check_plugin_checks_finetuners():
    check_plugin("finetuner", "octuplet", steps=1, p=2, k=2, eval_identities=2)
    assert lrfr_plugins.create("finetuner", "octuplet").needs_labels()
