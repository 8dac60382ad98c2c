"""The founding study's recipes run end to end: InsightFace pack -> iresnet -> quality-aware head -> ONNX."""

import math
import pathlib

import pytest
import torch

from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.runner import execute, prepare_run_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACK = ROOT / "tests" / "fixtures" / "mxnet" / "faces_tiny"  # written by mxnet 1.9.1


def test_study_recipes_share_the_studys_training_settings(registry):
    for name in ("arcface", "cosface", "sphereface", "adaface", "magface", "approach1", "approach2"):
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", registry=registry)
        assert recipe.data["head"]["name"] == name
        assert recipe.data["backbone"] == {**recipe.data["backbone"], "name": "iresnet50"}
        assert recipe.data["backbone"]["params"]["dropout"] == 0.4
        train = recipe.train
        assert (train.epochs, train.batch_size, train.milestones, train.hflip) == (18, 64, [5, 10, 15], 0.5)
        assert (recipe.optimizer.name, recipe.optimizer.lr, recipe.optimizer.weight_decay) == ("sgd", 0.1, 1e-4)
        assert recipe.data["degradations"][0]["params"]["sizes"] == [16]


@pytest.mark.parametrize("name", ["approach2", "adaface"])
def test_a_study_recipe_trains_on_an_insightface_pack(tmp_path, registry, name):
    overrides = [f"data.params.root={PACK}", "backbone.name=iresnet18", "train.batch_size=2",
                 "train.num_workers=0", "train.epochs=1", "export.onnx=false", "eval=[]"]
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", overrides, registry=registry)
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    result = execute(recipe, registry, tmp_path / "run", progress=False)
    assert result.metrics["train"]["steps"] == 3 and result.metrics["train"]["num_classes"] == 3
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert "layer4.1.conv2.weight" in state["backbone"]  # arcface_torch names, so the weights go both ways


def test_a_run_can_skip_corrupt_images_and_counts_them(tmp_path, registry):
    import shutil

    from lrfr_plugins.errors import DataError
    from lrfr_plugins.formats import RecordReader

    pack = tmp_path / "pack"
    shutil.copytree(PACK, pack)
    with RecordReader(pack / "train.rec") as reader:  # corrupt the JPEG of image key 2 in place
        start = reader.offset(2) + 8 + 24 + 200
    with open(pack / "train.rec", "r+b") as fh:
        fh.seek(start)
        fh.write(b"\x00" * 2000)
    overrides = [f"data.params.root={pack}", "backbone.name=tiny", "backbone.params.embedding_size=8",
                 "train.batch_size=3", "train.num_workers=0", "train.epochs=1", "export.onnx=false", "eval=[]"]
    recipe = load_recipe(ROOT / "recipes" / "arcface.yaml", overrides, registry=registry)
    prepare_run_dir(tmp_path / "stop", overwrite=False, resume=False)
    with pytest.raises(DataError, match=r"train.rec: record key 2: cannot decode the image .*data.params.skip_corrupt: true"):
        execute(recipe, registry, tmp_path / "stop", progress=False)
    recipe = load_recipe(ROOT / "recipes" / "arcface.yaml", [*overrides, "data.params.skip_corrupt=true"],
                         registry=registry)
    prepare_run_dir(tmp_path / "skip", overwrite=False, resume=False)
    result = execute(recipe, registry, tmp_path / "skip", progress=False)
    assert result.metrics["train"]["skipped_images"] == 1 and result.metrics["train"]["steps"] == 2
    assert "Skipped 1 corrupt images" in (tmp_path / "skip" / "results.md").read_text()
    assert "skipping a corrupt image" in (tmp_path / "skip" / "run.log").read_text()


def test_a_missing_benchmark_folder_stops_the_run_before_training(tmp_path, registry):
    overrides = [f"data.params.root={PACK}", "backbone.name=tiny", "train.num_workers=0",
                 f"eval.1.params.root={tmp_path / 'no-qmul'}"]
    recipe = load_recipe(ROOT / "recipes" / "arcface.yaml", overrides, registry=registry)
    assert [e["name"] for e in recipe.data["eval"]] == ["lfw", "qmul-survface", "scface"]
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    from lrfr_plugins.errors import DataError

    with pytest.raises(DataError, match=r"/data/lfw_crop: the LFW folder does not exist"):
        execute(recipe, registry, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # nothing trained


@pytest.mark.parametrize("name,params", [
    ("octuplet", ["finetune.0.params.steps=2", "finetune.0.params.p=2", "finetune.0.params.k=2",
                  "finetune.0.params.eval_identities=1", "finetune.0.params.lr=0.001"]),
    ("octuplet", ["finetune.0.params.steps=2", "finetune.0.params.p=2", "finetune.0.params.k=2",
                  "finetune.0.params.eval_identities=1", "finetune.0.params.head_weight=1.0",
                  "head={name: approach1}"]),  # the trained margin head's loss kept, with the quality it needs
    ("derivenet", ["finetune.0.params.steps=2", "finetune.0.params.batch_size=2", "finetune.0.params.eval_images=2",
                   "finetune.0.params.lr=0.001"]),
])
def test_the_finetuning_recipes_start_from_a_trained_run(tmp_path, registry, name, params):
    base = load_recipe(ROOT / "recipes" / "arcface.yaml", [f"data.params.root={PACK}", "backbone.name=iresnet18",
                                                           "train.batch_size=2", "train.epochs=1", "train.num_workers=0",
                                                           "export.onnx=false", "eval=[]"], registry=registry)
    prepare_run_dir(tmp_path / "arcface", overwrite=False, resume=False)
    execute(base, registry, tmp_path / "arcface", progress=False)
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml",
                         [f"data.params.root={PACK}", "backbone.name=iresnet18",
                          f"backbone.params.weights={tmp_path / 'arcface' / 'checkpoint.pt'}",
                          "train.num_workers=0", "export.onnx=false", "eval=[]", *params], registry=registry)
    prepare_run_dir(tmp_path / name, overwrite=False, resume=False)
    result = execute(recipe, registry, tmp_path / name, progress=False)
    assert result.metrics["train"]["steps"] == 0 and result.metrics["finetune"][0]["finetuner"] == name
    assert result.metrics["finetune"][0]["steps"] == 2
    if any("head_weight" in p for p in params):
        assert math.isfinite(result.metrics["finetune"][0]["head_loss_final"])
