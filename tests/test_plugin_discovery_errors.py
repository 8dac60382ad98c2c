"""A plugin that fails to load is named wherever its name is missing; contract flags in 'lrfr plugins' / 'lrfr show'."""

import json
import os
import textwrap

import pytest
from click.testing import CliRunner

import lrfr_plugins
from lrfr_plugins.cli import main
from lrfr_plugins.errors import RecipeError, UnknownPluginError
from lrfr_plugins.manager import get_plugin_manager
from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.registry import Registry

from conftest import run_lrfr
from plugin_factory import head_module, make_distribution

BROKEN = ("1 plugin package failed to load: lrfr-tenengrad (entry point 'tenengrad = lrfrtest_tenengrad' -> "
          "ModuleNotFoundError: No module named 'cv3'); fix it and see 'lrfr plugins'.")

RECIPE = """
lrfr: 1
name: tiny
data: {name: synthetic, params: {num_identities: 12, images_per_identity: 8}}
backbone: {name: tiny, params: {embedding_size: 32, widths: [8, 8, 16, 16]}}
head: {name: arcface}
quality: {name: tenengrad}
train: {epochs: 1, batch_size: 16}
"""

FLAGGED_HEAD = """
    from lrfr_plugins import hookimpl
    from lrfr_plugins.api import Head

    class NoisyHead(Head):
        '''A test head with every contract flag set.'''
        needs_quality = True
        default_quality = "laplacian"
        calibrated_quality = "laplacian"
        stochastic = True
        def forward(self, cosine, labels, quality=None, generator=None):
            return cosine

    @hookimpl
    def lrfr_register_heads(register):
        register("noisy", NoisyHead)
"""

FINETUNERS = """
    import dataclasses
    from lrfr_plugins import hookimpl
    from lrfr_plugins.api import Finetuner, param

    @dataclasses.dataclass(frozen=True)
    class Params:
        teacher: str = param(None, "required: a teacher checkpoint")

    class NeedsTeacher(Finetuner):
        '''Cannot be built from its defaults.'''
        Params = Params
        def __init__(self, params):
            if params.teacher is None:
                raise ValueError("teacher is required")
            super().__init__(params)

    class LabelFree(Finetuner):
        '''Reads no labels.'''
        def needs_labels(self):
            return False

    @hookimpl
    def lrfr_register_finetuners(register):
        register("needs-teacher", NeedsTeacher)
        register("label-free", LabelFree)
"""


@pytest.fixture
def broken_site(site):
    """lrfr-tenengrad, installed, whose module imports a package that is not there."""
    make_distribution(site, "lrfr-tenengrad", "0.3", {"tenengrad": "lrfrtest_tenengrad"},
                      {"lrfrtest_tenengrad": "import cv3\n"})
    return site


def env_for(site, load: str) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "LRFR_LOAD_PLUGINS": load}


def test_create_names_the_plugin_that_failed_to_load(broken_site):
    with pytest.raises(UnknownPluginError) as info:
        lrfr_plugins.create("quality", "tenengrad")
    lines = str(info.value).splitlines()
    assert lines[0] == "unknown quality 'tenengrad'."
    assert f"  {BROKEN}" in lines
    assert lines[-1] == "  Run 'lrfr plugins' to see which package provides each one."


def test_two_broken_packages_are_counted_and_each_named(broken_site):
    make_distribution(broken_site, "lrfr-other", "1.0", {"other": "lrfrtest_other"},
                      {"lrfrtest_other": "raise ImportError('needs libfoo')\n"})
    with pytest.raises(UnknownPluginError) as info:
        Registry.from_manager(get_plugin_manager()).get("head", "nope")
    message = str(info.value)
    assert "2 plugin packages failed to load: lrfr-other (entry point 'other = lrfrtest_other' -> ImportError: " \
           "needs libfoo); lrfr-tenengrad (entry point 'tenengrad = lrfrtest_tenengrad' -> ModuleNotFoundError: " \
           "No module named 'cv3'); fix them and see 'lrfr plugins'." in message


def test_a_failing_registration_hook_is_named_for_its_own_kind_only(site):
    source = head_module("scaled").replace('register("scaled", ScaleHead)', 'raise RuntimeError("GPU only")')
    make_distribution(site, "lrfr-gpu-heads", "1.0", {"gpuheads": "lrfrtest_gpuheads"}, {"lrfrtest_gpuheads": source})
    registry = Registry.from_manager(get_plugin_manager())
    with pytest.raises(UnknownPluginError) as info:
        registry.get("head", "scaled")
    assert "1 plugin package failed to load: lrfr-gpu-heads (gpuheads.lrfr_register_heads -> " \
           "RuntimeError: GPU only); fix it and see 'lrfr plugins'." in str(info.value)
    with pytest.raises(UnknownPluginError) as info:
        registry.get("quality", "tenengrad")
    assert "failed to load" not in str(info.value)


def test_recipe_validation_names_the_broken_plugin(broken_site, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "quality.name" in message and "unknown quality 'tenengrad'." in message and BROKEN in message


@pytest.mark.parametrize("command", ["validate", "run", "show"])
def test_cli_commands_name_the_broken_plugin(broken_site, tmp_path, command):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    args = {"validate": ["validate", str(path)], "run": ["run", str(path), "--out", str(tmp_path / "run")],
            "show": ["show", "quality", "tenengrad"]}[command]
    result = run_lrfr(*args, env=env_for(broken_site, "tenengrad"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert "unknown quality 'tenengrad'." in result.stderr and BROKEN in result.stderr
    assert not (tmp_path / "run").exists()


def test_without_load_failures_the_message_is_unchanged(registry):
    with pytest.raises(UnknownPluginError) as info:
        registry.get("quality", "tenengrad")
    assert "failed to load" not in str(info.value)


def plugins_json() -> dict:
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    return {(row["kind"], row["name"]): row for row in json.loads(result.stdout)}


def test_plugins_json_shows_contract_flags_of_builtins():
    rows = plugins_json()
    flags = rows[("head", "approach2")]["flags"]
    assert list(flags) == ["needs_quality", "default_quality", "calibrated_quality", "stochastic"]
    assert flags["needs_quality"] is True and flags["default_quality"] == "laplacian"
    assert rows[("head", "arcface")]["flags"]["needs_quality"] is False
    assert rows[("quality", "feature-norm")]["flags"] == {"uses_embeddings": True, "cacheable": False}
    assert rows[("quality", "laplacian")]["flags"] == {"uses_embeddings": False, "cacheable": True}
    assert rows[("finetuner", "octuplet")]["flags"] == {"needs_labels": True}
    assert rows[("degradation", "cross-resolution")]["flags"] == {}
    assert rows[("backbone", "tiny")]["flags"] == {}


def test_plugins_json_and_show_read_new_flags_of_third_party_plugins(site):
    make_distribution(site, "lrfr-noisy", "1.0", {"noisy": "lrfrtest_noisy"}, {"lrfrtest_noisy": FLAGGED_HEAD})
    make_distribution(site, "lrfr-fts", "1.0", {"fts": "lrfrtest_fts"}, {"lrfrtest_fts": FINETUNERS})
    rows = plugins_json()
    assert rows[("head", "noisy")]["flags"] == {"needs_quality": True, "default_quality": "laplacian",
                                                "calibrated_quality": "laplacian", "stochastic": True}
    assert rows[("finetuner", "label-free")]["flags"] == {"needs_labels": False}
    assert rows[("finetuner", "needs-teacher")]["flags"] == {}  # not constructible with defaults: omitted

    lrfr_plugins.cache_clear()
    shown = CliRunner().invoke(main, ["show", "head", "noisy", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["flags"]["stochastic"] is True
    text = CliRunner().invoke(main, ["show", "head", "noisy"]).stdout
    assert "Flags: needs_quality=True, default_quality=laplacian, calibrated_quality=laplacian, stochastic=True" in text
    text = CliRunner().invoke(main, ["show", "finetuner", "label-free"]).stdout
    assert "Flags: needs_labels=False (with default params)" in text
    text = CliRunner().invoke(main, ["show", "head", "arcface"]).stdout
    assert "Flags: needs_quality=False, default_quality=None" in text
    assert "Flags:" not in CliRunner().invoke(main, ["show", "backbone", "tiny"]).stdout


def test_plugins_text_has_a_flags_column():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == ["kind", "name", "provider", "version", "flags", "doc"]
    row = next(line for line in result.stdout.splitlines() if "| approach2 " in line)
    assert "needs_quality, default_quality=laplacian" in row
    row = next(line for line in result.stdout.splitlines() if "| laplacian " in line)
    assert "cacheable" in row and "uses_embeddings" not in row
    row = next(line for line in result.stdout.splitlines() if "| arcface " in line)
    assert "needs_quality" not in row
