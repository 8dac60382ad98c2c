"""Built-in synthetic data: procedural faces that ship as code, no downloads (stable API for plugin authors).

- :class:`SyntheticFaceGenerator`: deterministic faces per (identity, image) for datasets and protocols;
- :func:`draw_pairs`: genuine/impostor verification pairs over images laid out identity-major
  (image index = identity * per_identity + k), as the built-in synthetic protocols draw them.
"""

from lrfr_plugins.synthetic.faces import SyntheticFaceGenerator
from lrfr_plugins.synthetic.pairs import draw_pairs

__all__ = ["SyntheticFaceGenerator", "draw_pairs"]
