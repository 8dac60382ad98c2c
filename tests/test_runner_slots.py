"""The runner feeds every slot: quality reaches heads that need it, finetuners run and report, errors are clear."""

import dataclasses
import textwrap
import types

import pytest
import torch

from lrfr_plugins import hookimpl
from lrfr_plugins.api import Finetuner, Head, Quality, param
from lrfr_plugins.errors import RecipeError
from lrfr_plugins.manager import Provider, get_plugin_manager
from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.registry import Registry
from lrfr_plugins.runner import execute, prepare_run_dir

SEEN = {}


class FlagQuality(Quality):
    """1.0 for images the degradations left at full resolution, 0.0 for degraded ones."""

    def __call__(self, images, *, lr_mask=None):
        return (~lr_mask).float()


class QualityHead(Head):
    """Records the quality it receives; plain scaled cosine otherwise."""

    needs_quality = True
    default_quality = "flag"

    def forward(self, cosine, labels, quality=None):
        SEEN.setdefault("quality", []).append(quality.detach().clone())
        return cosine * 10.0


@dataclasses.dataclass(frozen=True)
class NudgeParams:
    steps: int = param(2, "optimisation steps", ge=1)


class Nudge(Finetuner):
    """Pulls the backbone's embeddings of a few images together; reports how many steps it ran."""

    Params = NudgeParams

    def run(self, context):
        optimizer = torch.optim.SGD(context.backbone.parameters(), lr=1e-3)
        images = torch.stack([context.dataset[i][0] for i in range(4)]).float() / 127.5 - 1
        for _ in range(self.params.steps):
            loss = context.backbone(images).var(0).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return {"steps": self.params.steps, "final_loss": loss.item()}


@hookimpl
def lrfr_register_quality(register):
    register("flag", FlagQuality)


@hookimpl
def lrfr_register_heads(register):
    register("quality-probe", QualityHead)


@hookimpl
def lrfr_register_finetuners(register):
    register("nudge", Nudge)


@pytest.fixture
def registry_with_test_plugins():
    pm = get_plugin_manager(entry_points=False)
    module = types.ModuleType("lrfrtest_slots")
    for name in ("lrfr_register_quality", "lrfr_register_heads", "lrfr_register_finetuners"):
        setattr(module, name, globals()[name])
    pm.register_plugin(module, "slots", Provider("lrfr-test-slots", "0.0.1", "lrfrtest_slots"))
    return Registry.from_manager(pm)


RECIPE = """
lrfr: 1
name: slots
data: {name: synthetic, params: {num_identities: 6, images_per_identity: 4}}
backbone: {name: tiny, params: {embedding_size: 8, widths: [4, 4, 4, 4]}}
head: {name: quality-probe}
degradations: [{name: cross-resolution}]
train: {epochs: 1, batch_size: 8, threads: 1}
finetune: [{name: nudge, params: {steps: 3}}]
eval: []
export: {onnx: false}
"""


def test_quality_and_finetuner_slots(tmp_path, registry_with_test_plugins):
    path = tmp_path / "slots.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    recipe = load_recipe(path, registry=registry_with_test_plugins)
    assert recipe.data["quality"]["name"] == "flag"  # the head's default, recorded in the resolved recipe
    assert recipe.data["finetune"][0]["provider"] == {"distribution": "lrfr-test-slots", "version": "0.0.1"}
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    SEEN.clear()
    result = execute(recipe, registry_with_test_plugins, tmp_path / "run", progress=False)
    # The head's default quality estimator was used: half of each batch degraded -> half zeros.
    assert len(SEEN["quality"]) == 3
    assert all(sorted(q.tolist()) == [0.0] * 4 + [1.0] * 4 for q in SEEN["quality"])
    finetuned = result.metrics["finetune"][0]
    assert result.metrics["finetune"] == [{"finetuner": "nudge", "steps": 3, "final_loss": finetuned["final_loss"],
                                           "seconds": finetuned["seconds"]}]  # the host adds the time it took
    assert isinstance(finetuned["seconds"], float) and finetuned["seconds"] >= 0


def test_a_head_that_needs_quality_without_a_default_is_a_recipe_error(tmp_path, registry_with_test_plugins,
                                                                       monkeypatch):
    monkeypatch.setattr(QualityHead, "default_quality", None)
    path = tmp_path / "slots.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    with pytest.raises(RecipeError, match=r"slots.yaml: quality: head 'quality-probe' needs a per-sample quality: "
                                          r"add 'quality: \{name: ...\}'. Installed: feature-norm, flag, laplacian, "
                                          r"resolution-flag"):
        load_recipe(path, registry=registry_with_test_plugins)
