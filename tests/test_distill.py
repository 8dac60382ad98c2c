"""Cross-resolution distillation: the student moves towards the teacher at low resolution, label-free data works,
BatchNorm statistics stay frozen by default, and the run shows the model before and after fine-tuning."""

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from lrfr_plugins.api import FinetuneContext
from lrfr_plugins.builtin.finetuners.distill import Distill, DistillParams, relation_loss
from lrfr_plugins.engine.freezing import batchnorm_modules
from lrfr_plugins.errors import DataError, LrfrError
from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.runner import execute, prepare_run_dir

TINY = {"embedding_size": 16, "widths": [4, 8, 8, 16]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for eight epochs on 12 synthetic identities: its embeddings separate identities at 112 px
    (a barely trained one maps every face near one direction, and cosines to the teacher are all near 1)."""
    from lrfr_plugins.manager import get_plugin_manager
    from lrfr_plugins.registry import Registry

    registry = Registry.from_manager(get_plugin_manager(entry_points=False))
    root = tmp_path_factory.mktemp("teacher")
    (root / "r.yaml").write_text(textwrap.dedent(f"""
        lrfr: 1
        name: teacher
        data: {{name: synthetic, params: {{num_identities: 12, images_per_identity: 8}}}}
        backbone: {{name: tiny, params: {TINY}}}
        head: {{name: arcface, params: {{scale: 16.0, margin: 0.2}}}}
        degradations: []
        train: {{epochs: 8, batch_size: 16, threads: 1, optimizer: {{name: adamw, lr: 3.0e-3}}, hflip: 0.0}}
        eval: []
        export: {{onnx: false}}
    """))
    prepare_run_dir(root / "run", overwrite=False, resume=False)
    execute(load_recipe(root / "r.yaml", registry=registry), registry, root / "run", progress=False)
    return root / "run"


def student(registry, trained):
    return registry.create("backbone", "tiny", **TINY, weights=str(trained / "checkpoint.pt"))


def context(backbone, dataset, **kw):
    return FinetuneContext(backbone, dataset, [], torch.device("cpu"), torch.Generator().manual_seed(0), False, **kw)


def test_relation_loss_is_zero_for_the_same_geometry_and_positive_otherwise():
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    assert relation_loss(x, 3.0 * x).item() == pytest.approx(0.0, abs=1e-7)  # cosines ignore the norms
    assert relation_loss(x, torch.randn(6, 8, generator=torch.Generator().manual_seed(1))).item() > 0.01


def test_distill_moves_the_low_resolution_student_towards_the_teacher(registry, trained):
    model = student(registry, trained).eval()
    bn_means = [m.running_mean.clone() for m in batchnorm_modules(model)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = registry.create("dataset", "synthetic", num_identities=12, images_per_identity=8)
    metrics = Distill(DistillParams(steps=25, batch_size=16, lr=1e-3, warmup_steps=2, eval_images=16, hflip=0.0)).run(
        context(model, data))
    assert metrics["steps"] == 25 and metrics["labels_used"] is False and metrics["held_out_images"] == 16
    cos_before, cos_after = metrics["teacher_cosine_before"], metrics["teacher_cosine_after"]
    assert set(cos_before) == {"112", "28", "16", "14", "7"} and cos_before["112"] == pytest.approx(1.0, abs=1e-5)
    assert cos_after["7"] > cos_before["7"] + 0.01 and cos_after["14"] > cos_before["14"]  # held-out images
    assert cos_after["112"] > 0.9  # the full-resolution embeddings stay near the teacher's
    assert metrics["final_loss"] < metrics["initial_loss"]
    changed = [k for k, v in model.state_dict().items() if "running" not in k and not torch.equal(v, before[k])]
    assert changed, "the student did not train"
    for mean, m in zip(bn_means, batchnorm_modules(model)):  # frozen by default
        assert torch.equal(mean, m.running_mean)
    assert not any(m.training for m in model.modules())  # the mode it came in with


def test_train_bn_updates_the_statistics(registry, trained):
    model = student(registry, trained)
    bn_means = [m.running_mean.clone() for m in batchnorm_modules(model)]
    data = registry.create("dataset", "synthetic", num_identities=12, images_per_identity=8)
    Distill(DistillParams(steps=2, batch_size=16, eval_images=16, train_bn=True)).run(context(model, data))
    assert any(not torch.equal(mean, m.running_mean) for mean, m in zip(bn_means, batchnorm_modules(model)))


def test_bad_settings_are_refused(registry, trained):
    with pytest.raises(ValueError, match="every loss weight is 0"):
        DistillParams(cosine_weight=0.0)
    data = registry.create("dataset", "synthetic", num_identities=12, images_per_identity=8)
    with pytest.raises(LrfrError, match="head_weight=0.5 needs identity labels"):
        Distill(DistillParams(steps=1, batch_size=16, head_weight=0.5)).run(context(student(registry, trained), data))
    with pytest.raises(LrfrError, match="use_recipe_degradations is true but the recipe's degradations list is empty"):
        Distill(DistillParams(steps=1, batch_size=16, use_recipe_degradations=True)).run(
            context(student(registry, trained), data))
    with pytest.raises(LrfrError, match=r"it needs at least batch_size \(128\)"):  # the recipe's, when not given
        Distill(DistillParams(steps=1)).run(context(student(registry, trained), data, batch_size=128))


def test_the_margin_term_gets_the_quality_its_head_reads(registry, trained):
    """A quality-reading head (approach2: Laplacian) gets the estimator's values on the degraded copies, as in
    training; before, distill passed None and the head stopped with a traceback."""
    from lrfr_plugins.engine.partial_fc import PartialFC

    data = registry.create("dataset", "synthetic", num_identities=12, images_per_identity=8)
    model = student(registry, trained)
    head, quality = registry.create("head", "approach2"), registry.create("quality", "laplacian")
    calls = []
    metrics = Distill(DistillParams(steps=2, batch_size=16, eval_images=16, head_weight=0.5)).run(context(
        model, data, head=head, classifier=PartialFC(data.num_classes, model.embedding_size, seed=0),
        quality=lambda images, lr_mask: calls.append(int(lr_mask.sum())) or quality(images, lr_mask=lr_mask)))
    assert metrics["labels_used"] and metrics["steps"] == 2 and len(calls) == 2 and all(calls)


@pytest.fixture
def loose_faces(tmp_path, registry):
    """A folder of aligned face images with no identity sub-folders."""
    data = registry.create("dataset", "synthetic", num_identities=6, images_per_identity=8)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(len(data)):
        Image.fromarray(data[i][0].permute(1, 2, 0).numpy()).save(folder / f"face{i:03d}.png")
    return folder


def recipe_text(trained, faces, *, epochs=0, finetune="[{name: distill, params: {steps: 3, batch_size: 16}}]"):
    return textwrap.dedent(f"""
        lrfr: 1
        name: distilled
        data: {{name: image-folder, params: {{root: {faces}}}}}
        backbone: {{name: tiny, params: {{embedding_size: 16, widths: [4, 8, 8, 16],
                    weights: {trained / 'checkpoint.pt'}}}}}
        head: {{name: arcface, params: {{scale: 16.0, margin: 0.2}}}}
        train: {{epochs: {epochs}, batch_size: 16, threads: 1}}
        finetune: {finetune}
        eval: [{{name: synthetic, params: {{num_identities: 6, images_per_identity: 3, num_pairs: 40,
                sizes: [112, 14]}}}}]
        export: {{onnx: false}}
    """)


def test_a_folder_without_identities_distills_and_shows_both_models(registry, trained, loose_faces, tmp_path):
    dataset = registry.create("dataset", "image-folder", root=str(loose_faces))
    assert dataset.num_classes == 0 and set(dataset.index.labels) == {-1}
    (tmp_path / "r.yaml").write_text(recipe_text(trained, loose_faces))
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    result = execute(load_recipe(tmp_path / "r.yaml", registry=registry), registry, tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finetune"][0]["steps"] == 3
    before, after = metrics["eval_before_finetune"][0], metrics["eval"][0]
    assert before["protocol"] == after["protocol"] == "synthetic"
    assert set(before["results"]) == {"112", "14"}
    lines = [line for line in result.results_markdown.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["before fine-tuning", "fine-tuned"] * 2
    assert (tmp_path / "run" / "accuracy_vs_resolution.png").is_file()


@pytest.mark.parametrize("epochs, finetune, message", [
    (1, "[]", r"the images have no identities .* margin training cannot run"),
    (0, "[{name: octuplet, params: {steps: 1}}]", r"finetune.0 \(octuplet\): needs identity labels"),
    (0, "[{name: distill, params: {steps: 1, head_weight: 1.0}}]", r"finetune.0 \(distill\): needs identity labels"),
])
def test_label_hungry_stages_are_refused_before_anything_runs(registry, trained, loose_faces, tmp_path, epochs,
                                                              finetune, message):
    (tmp_path / "r.yaml").write_text(recipe_text(trained, loose_faces, epochs=epochs, finetune=finetune))
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    with pytest.raises(DataError, match=message):
        execute(load_recipe(tmp_path / "r.yaml", registry=registry), registry, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "recipe.resolved.yaml").exists()


def test_packing_a_folder_without_identities_says_why(loose_faces, tmp_path):
    from lrfr_plugins.formats.image_folder import scan_image_folder

    with pytest.raises(DataError, match="no identity sub-folders; this needs identities"):
        scan_image_folder(loose_faces)
    assert np.all(np.asarray(scan_image_folder(loose_faces, unlabelled_ok=True).labels) == -1)


def test_a_finished_fine_tuning_is_in_the_checkpoint_and_not_repeated_on_resume(registry, trained, tmp_path):
    (tmp_path / "r.yaml").write_text(recipe_text(trained, "unused").replace(
        "{name: image-folder, params: {root: unused}}", "{name: synthetic, params: {num_identities: 8, "
                                                        "images_per_identity: 6}}"))
    recipe = load_recipe(tmp_path / "r.yaml", registry=registry)
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    execute(recipe, registry, tmp_path / "run", progress=False)
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert json.loads(state["finetune_done"])["metrics"][0]["steps"] == 3
    execute(recipe, registry, tmp_path / "run", resume=True, progress=False)
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["finetune"] == first["finetune"] and again["eval"] == first["eval"]
    assert "fine-tuning had finished before the run stopped" in (tmp_path / "run" / "run.log").read_text()
