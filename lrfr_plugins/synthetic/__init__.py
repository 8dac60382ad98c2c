"""Built-in synthetic data: procedural faces that ship as code, no downloads."""

from lrfr_plugins.synthetic.faces import SyntheticFaceGenerator

__all__ = ["SyntheticFaceGenerator"]
