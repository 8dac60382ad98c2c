"""Write a real installed distribution (dist-info with entry_points.txt) into a folder, for discovery tests."""

from __future__ import annotations

import pathlib
import textwrap


def make_distribution(site: pathlib.Path, dist: str, version: str, entry_points: dict[str, str],
                      modules: dict[str, str]) -> pathlib.Path:
    """``modules`` maps a module name to its source; ``entry_points`` maps an entry-point name to a module."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[lrfr]"] + [f"{ep} = {module}" for ep, module in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


HEAD_SOURCE = """
    import dataclasses
    from lrfr_plugins import hookimpl
    from lrfr_plugins.api import Head, param

    @dataclasses.dataclass(frozen=True)
    class Params:
        scale: float = param(16.0, "scale", gt=0)

    class {cls}(Head):
        '''A test head that only scales.'''
        Params = Params
        def forward(self, cosine, labels, quality=None):
            return cosine * self.params.scale

    @hookimpl
    def lrfr_register_heads(register):
        register("{name}", {cls})
"""


def head_module(name: str, cls: str = "ScaleHead") -> str:
    return HEAD_SOURCE.replace("{name}", name).replace("{cls}", cls)
