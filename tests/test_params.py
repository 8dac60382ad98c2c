import dataclasses
import pathlib
from typing import Literal

import pytest

from lrfr_plugins.errors import ParamsError
from lrfr_plugins.params import build_params, describe, param, params_to_dict


@dataclasses.dataclass(frozen=True)
class P:
    root: pathlib.Path = param(doc="dataset folder")
    scale: float = param(64.0, "s", gt=0)
    steps: int = param(10, "n", ge=1)
    mode: Literal["a", "b"] = param("a", "which")
    sizes: list[int] = param([112, 7], "px")
    limit: int | None = param(None, "optional")
    flag: bool = param(False, "switch")


def test_defaults_coercion_and_plain_dict():
    p = build_params(P, {"root": "~/x", "scale": 30, "steps": 2.0, "limit": 5}, owner="t")
    assert p.scale == 30.0 and isinstance(p.scale, float)
    assert p.steps == 2 and isinstance(p.steps, int)
    assert p.root == pathlib.Path("~/x").expanduser()
    assert params_to_dict(p)["root"] == str(pathlib.Path("~/x").expanduser())
    assert p.sizes == [112, 7]


def test_default_lists_are_not_shared():
    a = build_params(P, {"root": "x"}, owner="t")
    a.sizes.append(1)
    assert build_params(P, {"root": "x"}, owner="t").sizes == [112, 7]


def test_every_problem_is_reported_at_once():
    with pytest.raises(ParamsError) as info:
        build_params(P, {"scael": 1, "scale": -1, "steps": 1.5, "mode": "c", "sizes": "112", "flag": "yes"},
                     owner="head 'x' (pkg 1.0)")
    message = str(info.value)
    assert message.startswith("7 problems for head 'x' (pkg 1.0):")
    assert "- scael: unknown parameter; did you mean 'scale'? Accepted: root, scale, steps, mode, sizes, limit, flag" in message
    assert "- root: required parameter is missing (dataset folder)" in message
    assert "- scale: must be > 0, got -1.0" in message
    assert "- steps: must be an integer, got 1.5" in message
    assert "- mode: must be one of 'a', 'b', got 'c'" in message
    assert "- sizes: must be a list, got str '112'" in message
    assert "- flag: must be true or false, got 'yes'" in message
    assert [name for name, _ in info.value.problems][0] == "scael"


def test_bool_is_not_a_number():
    with pytest.raises(ParamsError, match="scale: must be a number, got True"):
        build_params(P, {"root": "x", "scale": True}, owner="t")


def test_cross_field_check_in_post_init():
    @dataclasses.dataclass(frozen=True)
    class Q:
        lo: float = param(0.0)
        hi: float = param(1.0)

        def __post_init__(self):
            if self.lo > self.hi:
                raise ValueError(f"lo ({self.lo}) must not exceed hi ({self.hi})")

    with pytest.raises(ParamsError, match=r"\(params\): lo \(2.0\) must not exceed hi \(1.0\)"):
        build_params(Q, {"lo": 2}, owner="t")


def test_describe_lists_type_default_doc_bounds():
    rows = {r["name"]: r for r in describe(P)}
    assert rows["root"]["default"] == "(required)"
    assert rows["scale"] == {"name": "scale", "type": "float", "default": 64.0, "doc": "s", "bounds": "> 0"}
    assert rows["mode"]["type"] == "one of 'a', 'b'"
    assert rows["limit"]["type"] == "int or null"
