"""Discovery from entry points, provenance, broken plugins, duplicates, escape hatches and create()."""


import pytest

import lrfr_plugins
from lrfr_plugins import hookspecs
from lrfr_plugins.errors import DuplicatePluginError, ParamsError, UnknownKindError, UnknownPluginError
from lrfr_plugins.manager import get_plugin_manager
from lrfr_plugins.registry import Registry

from plugin_factory import head_module, make_distribution


def fresh_registry() -> Registry:
    return Registry.from_manager(get_plugin_manager())


def test_one_registration_hook_per_kind():
    assert hookspecs.KINDS == ("backbone", "head", "quality", "degradation", "finetuner", "dataset", "protocol")
    for kind, hook in hookspecs.KIND_HOOKS.items():
        spec = getattr(hookspecs, hook)
        assert spec.__doc__, f"hook {hook} is undocumented"
        assert list(spec.__code__.co_varnames[: spec.__code__.co_argcount]) == ["register"]


def test_builtins_come_from_the_projects_own_entry_point(registry):
    info = registry.get("head", "arcface")
    assert info.provider.distribution == "lrfr-plugins"
    assert info.provider.version == lrfr_plugins.__version__
    assert info.provider.module == "lrfr_plugins.builtin"
    from importlib.metadata import entry_points

    assert any(ep.value == "lrfr_plugins.builtin" for ep in entry_points(group="lrfr"))


def test_third_party_plugin_is_discovered_with_its_provider(site):
    make_distribution(site, "lrfr-test-heads", "2.3.4", {"testheads": "lrfrtest_heads"},
                      {"lrfrtest_heads": head_module("scaled")})
    info = fresh_registry().get("head", "scaled")
    assert (info.provider.distribution, info.provider.version) == ("lrfr-test-heads", "2.3.4")
    head = fresh_registry().create("head", "scaled", scale=2.0)
    assert head.params.scale == 2.0


def test_broken_plugin_is_reported_and_skipped(site):
    make_distribution(site, "lrfr-broken", "0.1", {"broken": "lrfrtest_broken"},
                      {"lrfrtest_broken": "raise ImportError('needs libfoo')\n"})
    make_distribution(site, "lrfr-good", "0.1", {"good": "lrfrtest_good"}, {"lrfrtest_good": head_module("good")})
    registry = fresh_registry()
    assert "good" in registry.names("head") and "arcface" in registry.names("head")
    (err,) = registry.load_errors
    assert err.provider == "lrfr-broken" and "ImportError: needs libfoo" in err.error
    assert "lrfrtest_broken" in err.source


def test_misspelled_hook_is_reported_not_ignored(site):
    source = head_module("typo").replace("def lrfr_register_heads", "def lrfr_register_head")
    make_distribution(site, "lrfr-typo", "0.1", {"typo": "lrfrtest_typo"}, {"lrfrtest_typo": source})
    registry = fresh_registry()
    assert "typo" not in registry.names("head")
    (err,) = registry.load_errors
    assert "unknown hook 'lrfr_register_head'. Did you mean 'lrfr_register_heads'?" in err.error


def test_duplicate_name_names_both_providers(site):
    make_distribution(site, "lrfr-dup-a", "1.0", {"dupa": "lrfrtest_dupa"}, {"lrfrtest_dupa": head_module("arcface")})
    with pytest.raises(DuplicatePluginError) as info:
        fresh_registry()
    message = str(info.value)
    assert "head 'arcface' is registered twice" in message
    assert "lrfr-plugins 0.1.0" in message and "lrfr-dup-a 1.0" in message
    assert "LRFR_BLOCK_PLUGINS" in message


def test_load_and_block_escape_hatches(site, monkeypatch):
    make_distribution(site, "lrfr-one", "1.0", {"one": "lrfrtest_one"}, {"lrfrtest_one": head_module("one")})
    make_distribution(site, "lrfr-two", "1.0", {"two": "lrfrtest_two"}, {"lrfrtest_two": head_module("two")})
    assert {"one", "two"} <= set(fresh_registry().names("head"))
    monkeypatch.setenv("LRFR_LOAD_PLUGINS", "")
    builtin_heads = set(fresh_registry().names("head"))
    assert "arcface" in builtin_heads and not {"one", "two"} & builtin_heads
    monkeypatch.setenv("LRFR_LOAD_PLUGINS", "lrfr-two")  # a distribution name works as well as an entry point
    assert set(fresh_registry().names("head")) == builtin_heads | {"two"}
    monkeypatch.delenv("LRFR_LOAD_PLUGINS")
    monkeypatch.setenv("LRFR_BLOCK_PLUGINS", "one")
    assert "one" not in fresh_registry().names("head")
    monkeypatch.setenv("LRFR_BLOCK_PLUGINS", "builtin,one")
    assert fresh_registry().names("head") == ["two"]


def test_create_errors_list_choices_and_suggest(registry, monkeypatch):
    monkeypatch.setattr(lrfr_plugins, "get_registry", lambda: registry)
    with pytest.raises(UnknownKindError, match=r"unknown plugin kind 'heads'\. Did you mean 'head'\? Kinds: backbone, head"):
        lrfr_plugins.create("heads", "arcface")
    with pytest.raises(UnknownPluginError) as info:
        lrfr_plugins.create("head", "arcfce")
    assert str(info.value).splitlines() == [
        "unknown head 'arcfce'.", "  Did you mean 'arcface'?", f"  Installed heads: {', '.join(registry.names('head'))}",
        "  Run 'lrfr plugins' to see which package provides each one."]
    with pytest.raises(ParamsError, match=r"margn: unknown parameter; did you mean 'margin'\?"):
        lrfr_plugins.create("head", "arcface", margn=0.3)
    assert isinstance(UnknownPluginError("x"), lrfr_plugins.LrfrError)
    assert not isinstance(UnknownPluginError("x"), KeyError)


def test_create_returns_ready_instances(registry):
    import torch

    head = registry.create("head", "arcface", margin=0.3, scale=10)
    assert isinstance(head, torch.nn.Module) and head.params.margin == 0.3
    backbone = registry.create("backbone", "tiny", embedding_size=32)
    assert backbone(torch.zeros(2, 3, 112, 112)).shape == (2, 32)


def test_every_builtin_plugin_is_documented_and_constructible_with_defaults(registry):
    """Every parameter has a doc; a plugin builds from its defaults, or says which required data path is missing."""
    import dataclasses

    from lrfr_plugins.errors import ParamsError

    for info in registry:
        assert info.doc, f"{info.kind} '{info.name}' has no docstring"
        for row in __import__("lrfr_plugins.params", fromlist=["describe"]).describe(info.params_cls):
            assert row["doc"], f"{info.kind} '{info.name}' parameter {row['name']} has no doc"
        required = [f.name for f in dataclasses.fields(info.params_cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if not required:
            registry.create(info.kind, info.name)
            continue
        assert set(required) <= {"root", "path"}, f"{info.kind} '{info.name}' requires {required}"
        with pytest.raises(ParamsError, match=rf"{required[0]}: required parameter is missing"):
            registry.create(info.kind, info.name)


def test_lrfr_plugins_warns_about_a_broken_plugin_and_still_lists_the_rest(tmp_path):
    import json
    import os

    from conftest import run_lrfr

    site = make_distribution(tmp_path / "site", "lrfr-broken", "0.1", {"broken": "lrfrtest_cli_broken"},
                             {"lrfrtest_cli_broken": "import does_not_exist\n"})
    result = run_lrfr("plugins", "--json", env={"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
                                                 "LRFR_LOAD_PLUGINS": "broken"})
    assert result.returncode == 0
    assert any(row["name"] == "arcface" for row in json.loads(result.stdout))
    assert ("Warning: plugin not loaded: entry point 'broken = lrfrtest_cli_broken' from lrfr-broken: "
            "ModuleNotFoundError: No module named 'does_not_exist'") in result.stderr
