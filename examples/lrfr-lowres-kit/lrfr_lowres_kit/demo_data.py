"""A small pairs-csv folder of synthetic faces, for the kit's recipe and tests (not a plugin).

    python -m lrfr_lowres_kit.demo_data runs/lowres-kit-pairs            # 20 identities x 4 images, 200 pairs

Faces come from :class:`lrfr_plugins.synthetic.SyntheticFaceGenerator`'s ``test`` split (identities the built-in
``synthetic`` training data never shows). Pairs alternate genuine / impostor, so every fold holds both kinds.
"""

from __future__ import annotations

import argparse
import csv
import pathlib

import numpy as np
from PIL import Image

from lrfr_plugins.synthetic import SyntheticFaceGenerator


def write_pairs_folder(root: str | pathlib.Path, *, identities: int = 20, per_identity: int = 4, pairs: int = 200,
                       seed: int = 0) -> pathlib.Path:
    """Write ``root/<id>/<k>.png`` and ``root/pairs.csv``; return ``root``."""
    if identities < 2 or per_identity < 2 or pairs < 2:
        raise ValueError("need at least 2 identities, 2 images per identity and 2 pairs")
    root = pathlib.Path(root)
    ids = np.repeat(np.arange(identities), per_identity)
    samples = np.tile(np.arange(per_identity), identities)
    faces = SyntheticFaceGenerator(seed=seed, split="test").render(ids, samples)
    for face, i, k in zip(faces, ids, samples):
        (root / f"{i:03d}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(root / f"{i:03d}" / f"{k}.png")
    rng = np.random.default_rng(seed)
    with (root / "pairs.csv").open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["path_a", "path_b", "same"])
        for n in range(pairs):
            same = n % 2 == 0
            a = int(rng.integers(identities))
            b = a if same else int((a + rng.integers(1, identities)) % identities)
            ka, kb = rng.choice(per_identity, 2, replace=False) if same else rng.integers(per_identity, size=2)
            out.writerow([f"{a:03d}/{ka}.png", f"{b:03d}/{kb}.png", int(same)])
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder to write (created)")
    parser.add_argument("--identities", type=int, default=20)
    parser.add_argument("--per-identity", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=200)
    args = parser.parse_args(argv)
    root = write_pairs_folder(args.root, identities=args.identities, per_identity=args.per_identity, pairs=args.pairs)
    print(f"wrote {root / 'pairs.csv'}")


if __name__ == "__main__":
    main()
