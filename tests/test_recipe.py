"""Recipes: extends, --set, resolution with providers, and every problem reported with file and dotted path."""

import textwrap

import pytest
import yaml

from lrfr_plugins.errors import RecipeError
from lrfr_plugins.recipe import load_recipe, parse_set

BASE = """
lrfr: 1
name: base
seed: 3
data: {name: synthetic, params: {num_identities: 10, images_per_identity: 4}}
backbone: {name: tiny, params: {embedding_size: 16}}
head: {name: arcface, params: {scale: 32.0, margin: 0.4}}
degradations:
  - {name: cross-resolution, params: {sizes: [16]}}
train: {epochs: 1, batch_size: 8, optimizer: {lr: 0.05}}
eval:
  - {name: synthetic, params: {num_identities: 10, num_pairs: 40}}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_resolved_recipe_fills_every_default_and_records_providers(tmp_path, registry):
    recipe = load_recipe(write(tmp_path, "base.yaml", BASE), registry=registry)
    head = recipe.data["head"]
    assert head["params"] == {"scale": 32.0, "margin": 0.4, "easy_margin": False, "fallback": "th_mm",
                              "gradient": "exact"}
    assert head["provider"] == {"distribution": "lrfr-plugins", "version": "0.1.0"}
    assert recipe.data["train"]["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    assert recipe.data["quality"] is None and recipe.data["finetune"] == []
    # The resolved recipe is itself a valid recipe that resolves to the same thing.
    again = write(tmp_path, "resolved.yaml", recipe.dump())
    assert load_recipe(again, registry=registry).data == recipe.data


def test_extends_deep_merges_and_replaces_lists_and_renamed_slots(tmp_path, registry):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """
        extends: base.yaml
        name: child
        head: {params: {margin: 0.3}}
        degradations: []
        train: {epochs: 2}
    """)
    data = load_recipe(child, registry=registry).data
    assert data["name"] == "child" and data["seed"] == 3
    assert data["head"]["params"]["margin"] == 0.3 and data["head"]["params"]["scale"] == 32.0
    assert data["degradations"] == []
    assert data["train"]["epochs"] == 2 and data["train"]["batch_size"] == 8


def test_a_slot_whose_name_changes_is_replaced_whole(tmp_path, registry):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nbackbone: {name: tiny}\n")
    assert load_recipe(child, registry=registry).data["backbone"]["params"]["embedding_size"] == 16
    # Same name: params merge. A different name would drop the old params instead of leaking them.
    from lrfr_plugins.recipe import _merge, _Origins

    merged = _merge({"head": {"name": "a", "params": {"x": 1}}}, {"head": {"name": "b"}}, _Origins(), "")
    assert merged == {"head": {"name": "b"}}


def test_set_overrides_any_value_including_list_items(tmp_path, registry):
    path = write(tmp_path, "base.yaml", BASE)
    recipe = load_recipe(path, ["head.params.margin=0.2", "eval.0.params.sizes=[112, 14]", "train.max_steps=3",
                                "quality=null"], registry=registry)
    assert recipe.data["head"]["params"]["margin"] == 0.2
    assert recipe.data["eval"][0]["params"]["sizes"] == [112, 14]
    assert recipe.train.max_steps == 3


def test_parse_set_values_are_yaml():
    assert parse_set("a.b=2") == (["a", "b"], 2)
    assert parse_set("a=[1, 2]") == (["a"], [1, 2])
    assert parse_set("a=true") == (["a"], True)
    assert parse_set("a=x=y") == (["a"], "x=y")
    with pytest.raises(RecipeError, match=r"--set 'epochs': expected DOTTED.PATH=VALUE, e.g. --set train.epochs=2"):
        parse_set("epochs")


def test_every_problem_at_once_with_file_and_dotted_path(tmp_path, registry):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """
        extends: base.yaml
        head: {name: arcfce}
        backbone: {params: {embeding_size: 8}}
        trian: {}
    """)
    with pytest.raises(RecipeError) as info:
        load_recipe(child, ["train.batch_size=one"], registry=registry)
    message = str(info.value)
    assert message.startswith("4 problems in the recipe:")
    assert "child.yaml: trian: unknown top-level key. Did you mean 'train'?" in message
    assert ("child.yaml: head.name: unknown head 'arcfce'.\n  Did you mean 'arcface'?\n"
            f"  Installed heads: {', '.join(registry.names('head'))}") in message
    assert ("child.yaml: backbone.params: 1 problem for backbone 'tiny' (lrfr-plugins 0.1.0):\n"
            "  - embeding_size: unknown parameter; did you mean 'embedding_size'?") in message
    assert ("--set train.batch_size=one: train: 1 problem for 'train':\n"
            "  - batch_size: must be an integer, got 'one'") in message


def test_problem_in_a_base_file_names_the_base(tmp_path, registry):
    write(tmp_path, "base.yaml", BASE.replace("margin: 0.4", "margin: -1"))
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\n")
    with pytest.raises(RecipeError, match=r"base.yaml: head.params: 1 problem for head 'arcface' .*\n  - margin: must be >= 0, got -1.0"):
        load_recipe(child, registry=registry)


def test_missing_required_sections_and_wrong_types(tmp_path, registry):
    path = write(tmp_path, "bad.yaml", "lrfr: 1\nhead: arcface\ndegradations: {name: cross-resolution}\nseed: x\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, registry=registry)
    message = str(info.value)
    assert "bad.yaml: seed: must be an integer, got 'x'." in message
    assert "bad.yaml: data: required: the dataset to use, as {name: ..., params: {...}}. Installed: image-folder, insightface-rec, synthetic" in message
    assert "bad.yaml: backbone: required" in message
    assert "bad.yaml: head: must be a mapping like {name: ..., params: {...}}, got 'arcface'." in message
    assert "bad.yaml: degradations: must be a list of {name: ..., params: {...}} entries" in message


def test_missing_plugin_name_lists_choices(tmp_path, registry):
    path = write(tmp_path, "r.yaml", BASE.replace("head: {name: arcface, params: {scale: 32.0, margin: 0.4}}",
                                                  "head: {params: {scale: 32.0}}"))
    with pytest.raises(RecipeError, match=r"r.yaml: head.name: required: which head to use. Choose one of: "
                                          + ", ".join(registry.names("head"))):
        load_recipe(path, registry=registry)


def test_extends_missing_file(tmp_path, registry):
    path = write(tmp_path, "child.yaml", "extends: nowhere/base.yaml\n")
    with pytest.raises(RecipeError, match=r"child.yaml: extends: base recipe 'nowhere/base.yaml' not found \(looked for "
                                          r".*nowhere/base.yaml\). The path is relative to the folder of"):
        load_recipe(path, registry=registry)


def test_extends_cycle(tmp_path, registry):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    path = write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match=r"extends: recipes extend each other in a cycle"):
        load_recipe(path, registry=registry)


def test_invalid_yaml_names_line_and_column(tmp_path, registry):
    path = write(tmp_path, "broken.yaml", "name: x\nhead: {name: arcface\n")
    with pytest.raises(RecipeError, match=r"broken.yaml:3:1: invalid YAML: .*Fix the syntax at that line."):
        load_recipe(path, registry=registry)


def test_top_level_must_be_a_mapping_and_file_must_exist(tmp_path, registry):
    with pytest.raises(RecipeError, match=r"list.yaml: a recipe must be a YAML mapping"):
        load_recipe(write(tmp_path, "list.yaml", "- a\n- b\n"), registry=registry)
    with pytest.raises(RecipeError, match=r"nope.yaml: file not found"):
        load_recipe(tmp_path / "nope.yaml", registry=registry)


def test_yaml_is_loaded_safely(tmp_path, registry):
    path = write(tmp_path, "evil.yaml", "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match=r"invalid YAML"):
        load_recipe(path, registry=registry)


def test_unsupported_schema_version(tmp_path, registry):
    path = write(tmp_path, "v2.yaml", BASE.replace("lrfr: 1", "lrfr: 2"))
    with pytest.raises(RecipeError, match=r"v2.yaml: lrfr: unsupported recipe schema version 2"):
        load_recipe(path, registry=registry)


def test_shipped_recipes_validate(registry):
    import pathlib

    recipes = sorted((pathlib.Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        assert yaml.safe_load(path.read_text())
        load_recipe(path, registry=registry)
