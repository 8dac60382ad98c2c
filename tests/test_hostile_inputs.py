"""What the toolkit survives: hostile and careless inputs, each generated here, small, and each answered by one clear
error (exit 1, no traceback) instead of a crash, unbounded memory or a write outside the run folder (issue 14).

Covered so far: YAML bombs and deep nesting, duplicate keys, non-UTF-8 recipes, recipe names that escape runs/,
seeds outside torch's range. (Checkpoints, .bin pickles and arcface_torch configs are refused by their loaders'
own tests: test_backbone_iresnet, test_formats_verification_bin, test_import_config.)
"""

import textwrap

import pytest

from lrfr_plugins.errors import LrfrError, RecipeError
from lrfr_plugins.recipe import load_recipe, parse_set
from lrfr_plugins.safe_yaml import MAX_DEPTH, load_yaml

BASE = """
lrfr: 1
name: {name}
seed: {seed}
data: {{name: synthetic, params: {{num_identities: 4, images_per_identity: 2}}}}
backbone: {{name: tiny, params: {{embedding_size: 16, widths: [4, 8, 8, 16]}}}}
head: {{name: arcface}}
train: {{epochs: 1, batch_size: 4}}
eval: []
"""

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def recipe(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path, registry):
    path = recipe(tmp_path, BILLION_LAUGHS)  # 9**9 strings once expanded: gigabytes
    with pytest.raises(RecipeError, match=r"r.yaml:2:\d+: invalid YAML: the alias \*a is not accepted"):
        load_recipe(path, registry=registry)


def test_a_self_referencing_alias_and_deep_nesting_are_refused_without_recursion_errors(tmp_path, registry):
    with pytest.raises(RecipeError, match=r"invalid YAML: the alias \*x is not accepted"):
        load_recipe(recipe(tmp_path, "x: &x [*x]\n"), registry=registry)
    with pytest.raises(RecipeError, match=f"invalid YAML: nesting deeper than {MAX_DEPTH} levels"):
        load_recipe(recipe(tmp_path, "a: " + "[" * 200_000 + "]" * 200_000 + "\n"), registry=registry)
    assert load_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))  # as deep as allowed still reads


def test_a_key_written_twice_is_an_error_naming_both_lines(tmp_path, registry):
    text = BASE.format(name="twice", seed=0) + "seed: 3\n"
    with pytest.raises(RecipeError, match=r"r.yaml:10:1: invalid YAML: the key 'seed' appears twice in one mapping "
                                          r"\(first on line 4\)"):
        load_recipe(recipe(tmp_path, text), registry=registry)


def test_aliases_in_a_set_value_are_refused_too():
    with pytest.raises(RecipeError, match="--set 'eval=&a \\[\\*a\\]': the value is not valid YAML"):
        parse_set("eval=&a [*a]")


def test_a_recipe_or_extends_target_that_is_not_utf8_names_the_byte(tmp_path, registry):
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin1.yaml: not UTF-8 text \(byte 9 is 0xe9\). Save the recipe as UTF-8"):
        load_recipe(tmp_path / "latin1.yaml", registry=registry)
    child = recipe(tmp_path, "extends: latin1.yaml\n" + BASE.format(name="child", seed=0), "child.yaml")
    with pytest.raises(RecipeError, match=r"latin1.yaml: not UTF-8 text"):
        load_recipe(child, registry=registry)


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/b", "..", ".", "a\\\\b"])
def test_a_recipe_name_must_stay_inside_runs(tmp_path, registry, name):
    path = recipe(tmp_path, BASE.format(name=f"'{name}'", seed=0))
    with pytest.raises(RecipeError, match=r"name: .* is not a single folder name; it becomes runs/<name>"):
        load_recipe(path, registry=registry)


def test_the_cli_refuses_an_escaping_name_and_writes_nothing_outside(lrfr, tmp_path):
    path = recipe(tmp_path, BASE.format(name="'../../escaped'", seed=0))
    result = lrfr("run", str(path), "--no-progress", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is not a single folder name" in result.stderr
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "runs").exists()  # runs/../../escaped


@pytest.mark.parametrize("seed", [2**63, 2**64 + 5, -1])
def test_a_seed_outside_torchs_range_is_a_recipe_error(tmp_path, registry, seed):
    with pytest.raises(RecipeError, match=rf"seed: .*must be between 0 and 2\*\*63 - 1 \(torch's seed range\), "
                                          rf"got {seed}"):
        load_recipe(recipe(tmp_path, BASE.format(name="seeded", seed=seed)), registry=registry)


def test_a_run_directory_with_an_invalid_resolved_recipe_is_one_error(tmp_path, registry):
    from lrfr_plugins.engine.models import load_model

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.resolved.yaml").write_text("a: &a [*a]\n")
    with pytest.raises(LrfrError, match=r"recipe.resolved.yaml: not a readable recipe \(the alias \*a"):
        load_model(tmp_path / "run", registry=registry, device="cpu")


def test_1e_3_is_a_number_in_recipes_and_set_values(tmp_path, registry):
    """YAML 1.1 reads 1e-3 as a string, which was refused as 'must be a number' with no hint."""
    assert parse_set("train.optimizer.lr=1e-3") == (["train", "optimizer", "lr"], 0.001)
    text = BASE.format(name="exp", seed=0).replace("train: {epochs: 1, batch_size: 4}",
                                                   "train: {epochs: 1, batch_size: 4, optimizer: {lr: 1e-3}}")
    assert load_recipe(recipe(tmp_path, text), registry=registry).optimizer.lr == 0.001
    assert load_yaml("v: 2.5E+4\nw: e3\n") == {"v": 25000.0, "w": "e3"}
