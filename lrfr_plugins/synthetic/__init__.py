"""Built-in synthetic data: procedural faces that ship as code, no downloads (stable API for plugin authors).

- :class:`SyntheticFaceGenerator`: deterministic faces per (identity, image) for datasets and protocols;
- :func:`draw_pairs`: genuine/impostor verification pairs over images laid out identity-major
  (image index = identity * per_identity + k), as the built-in synthetic protocols draw them.

``draw_pairs`` is defined with the built-in protocol and loaded on first use, so importing this module stays
NumPy-only (the protocol module imports torch).
"""

from lrfr_plugins.synthetic.faces import SyntheticFaceGenerator

__all__ = ["SyntheticFaceGenerator", "draw_pairs"]


def __getattr__(name: str):
    if name == "draw_pairs":
        from lrfr_plugins.builtin.protocols.synthetic import draw_pairs

        globals()["draw_pairs"] = draw_pairs
        return draw_pairs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
