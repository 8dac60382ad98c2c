"""TinyFace (Cheng, Zhu, Gong, ACCV 2018) closed-set identification: rank-1/5/10/20 and mAP over 157,871 images.

**Input: the release's test split** (``tinyface.zip`` from https://qmul-tinyface.github.io/), ``root`` = its
``tinyface/Testing_Set`` folder or a folder above it (``tinyface/`` or the folder holding ``tinyface/``):

* ``Probe/`` - 3,728 probe faces, listed with their identities in ``probe_img_ID_pairs.mat`` (cell array
  ``probe_set`` (N, 1) of file names, numeric ``probe_ids`` (N, 1));
* ``Gallery_Match/`` - 4,443 gallery faces of the probe identities, in ``gallery_match_img_ID_pairs.mat``
  (``gallery_set``, ``gallery_ids``);
* ``Gallery_Distractor/`` - 153,428 distractor faces of other people (every ``.jpg``/``.jpeg``/``.png`` under it,
  searched recursively, sorted by path); no list, no identity: each gets the label -100 (as the release's
  evaluation script and AdaFace's ``tinyface_helper.py`` do), so a distractor is never a mate.

Identities come from the ``.mat`` files (the release's evaluation reads them there; AdaFace reads the same ids from
the file-name prefix ``<id>_<n>.jpg``); the number of file names whose prefix disagrees is recorded
(``settings["id_prefix_mismatches"]``, 0 on the release). ``images_dir`` points at another copy of the three image
folders with the same names (e.g. AdaFace's MTCNN-aligned ``aligned_pad_0.1_pad_high``), the ``.mat`` files still
coming from ``Testing_Set``; a listed name missing there is looked up by its stem with another image extension.

**Images** are TinyFace's native, unaligned, non-square low-resolution crops (about 20 x 16 px on average). Each is
made 112 x 112 by ``resize`` (recorded): ``stretch`` (default) resizes straight to 112 x 112 (aspect not kept);
``center-crop`` resizes the short side to 112 (long side ``int(112 * long / short)``) and crops the centre square
(torchvision ``Resize(112)`` + ``CenterCrop(112)``, used by public TinyFace evaluation scripts); ``pad`` /
``center-pad`` keep the aspect with the long side 112 on a black square (the founding study's ``square_crop``,
top-left / centred). ``interpolation`` (default ``bilinear``) and ``antialias`` (default true: PIL's ``BILINEAR``,
what torchvision's ``Resize`` does to a PIL image) are those of :func:`lrfr_plugins.ops.resize.resize_to`. A
112 x 112 image (an aligned copy) is passed unchanged. The embedder receives uint8 **RGB** (N, 3, 112, 112).

**Scoring**, as the release's evaluation and AdaFace's ``validate_tinyface.py``:

* gallery = Gallery_Match + Gallery_Distractor (157,871 images); embeddings L2-normalised, similarity = cosine
  (AdaFace: inner product of normalised features; the release's script: Euclidean distance, the same order on
  normalised features);
* **images, not subjects, are ranked**: a probe's rank = the position of its best-scoring mate image in its ranked
  gallery list = 1 + the number of non-mate gallery images scoring above it (ties: ``pessimistic``, the default,
  counts equal non-mates as above, ``optimistic`` does not; the release's ``argsort`` falls in between);
  rank-k = fraction of probes with rank <= k, over all 3,728 probes (every probe identity has mates);
* **mAP**: per probe, the average precision of its ranked list with every gallery image of its identity relevant,
  by :func:`lrfr_plugins.metrics.retrieval.average_precision` (default ``trapezoid`` = the release's
  Market-1501 ``compute_AP``; ``step`` = plain AP), then the mean over probes;
* ``flip: sum`` adds the embedding of the mirrored image before normalising (AdaFace's default flip test,
  ``pre_norm_vector_add``, when the embedder returns un-normalised features; its ``average`` when normalised ones).

The similarity is never held whole (3,728 x 157,871): probes are scored in blocks against gallery chunks, keeping
per probe only the counts of non-mates above each mate (float32; ``block`` x ``chunk`` scores at a time).

**Memory** is bounded for the full 157,871 images: images are read, decoded, resized and embedded ``batch_size`` at
a time (:func:`lrfr_plugins.ops.batches.embed_batches`; at most ``batch_size`` decoded images exist at once, never
the 5.9 GB of all of them), and only the L2-normalised embeddings are kept, in one preallocated array: float32
(157,871 x 512 = 323 MB), or float16 when probes + gallery x D float32 would exceed ``embedding_budget_mb``
(recorded: ``settings["embedding_dtype"]``; scores are computed in float32 either way). Progress (``progress``):
one bar per phase, ``tinyface: embed probes``, ``tinyface: embed gallery`` (Gallery_Match + distractors, in
images) and ``tinyface: score`` (in probes).

**Published numbers to compare with** (rank-1 / rank-5 in %, AdaFace README "Low Quality Scenario" table, the
CVPR 2022 paper's TinyFace columns): AdaFace R100 WebFace12M 72.29 / 74.97, WebFace4M 72.02 / 74.52, MS1MV2
68.21 / 71.54; CurricularFace R100 MS1MV2 63.68 / 67.65. Those were measured on AdaFace's MTCNN-aligned 112 x 112
copy (``images_dir``), BGR input, with flip test (``pre_norm_vector_add``); compare ``rank1`` / ``rank5`` only
under those conditions (and the embedder's channel order): native images resized here are a different, harder
input. The paper reports no mAP; the release's own script prints mAP and rank-1/5/10/20/50.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ...api import Embedder, Protocol, ProtocolResult, param
from ...errors import DataError
from ...formats.matlab import cell_name
from ...formats.images import decode_image
from ...metrics.identification import cmc, rank_k_accuracy
from ...metrics.retrieval import average_precision
from ...metrics.verification import thin_curve
from ...ops.batches import DEFAULT_BUDGET_MB, embed_batches, embedding_dtype
from ...ops.resize import Mode, pad_to_square, resize_to

log = logging.getLogger("lrfr")

SIZE = 112
KEY = "identification"
TESTING_SET = "Testing_Set"
PROBE_DIR, MATCH_DIR, DISTRACTOR_DIR = "Probe", "Gallery_Match", "Gallery_Distractor"
PROBE_MAT, MATCH_MAT = "probe_img_ID_pairs.mat", "gallery_match_img_ID_pairs.mat"
PROBE_KEYS, MATCH_KEYS = ("probe_set", "probe_ids"), ("gallery_set", "gallery_ids")
DISTRACTOR_LABEL = -100
#: the release's counts (probes, gallery match, distractors)
EXPECTED = {"n_probes": 3728, "n_gallery": 4443, "n_distractors": 153428}
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
RANKS = (1, 5, 10, 20)
RELEASE = "tinyface.zip (https://qmul-tinyface.github.io/)"

Resize = Literal["stretch", "center-crop", "pad", "center-pad"]


@dataclasses.dataclass(frozen=True)
class TinyFaceParams:
    root: str = param(doc="TinyFace's tinyface/Testing_Set folder (Probe/, Gallery_Match/, Gallery_Distractor/, "
                          "probe_img_ID_pairs.mat, gallery_match_img_ID_pairs.mat) or a folder above it")
    images_dir: str | None = param(None, "another copy of Probe/, Gallery_Match/, Gallery_Distractor/ (e.g. AdaFace's "
                                         "aligned 112x112 aligned_pad_0.1_pad_high); null: the Testing_Set folders")
    resize: Resize = param("stretch", "non-112x112 images: stretch (straight to 112x112), center-crop (short side "
                                      "112, centre square), pad / center-pad (aspect kept, long side 112, black "
                                      "square, top-left / centred)")
    interpolation: Mode = param("bilinear", "resize kernel (lrfr_plugins.ops.resize modes)")
    antialias: bool = param(True, "anti-alias when shrinking (true = PIL BILINEAR; TinyFace faces are mostly "
                                  "enlarged, where it has no effect)")
    flip: Literal["none", "sum"] = param("none", "also embed the mirrored image and add the two embeddings before "
                                                 "normalising (AdaFace's flip test)")
    ties: Literal["pessimistic", "optimistic"] = param("pessimistic", "a non-mate scoring exactly a mate's score: "
                                                                      "ranked above it (pessimistic) or below")
    ap_rule: Literal["trapezoid", "step"] = param("trapezoid", "average precision: trapezoid (the release's "
                                                               "compute_AP) or step (plain AP)")
    max_distractors: int | None = param(None, "use only the first N distractors (sorted by path), for a quick run; "
                                              "null: all (the benchmark)", ge=0)
    require_complete: bool = param(False, "require the release's counts (3,728 probes, 4,443 gallery, 153,428 "
                                          "distractors); otherwise a different count is a warning")
    batch_size: int = param(512, "images decoded and handed to the embedder at a time", ge=1)
    block: int = param(256, "probes scored at a time", ge=1)
    chunk: int = param(16384, "gallery images scored at a time (block x chunk float32 scores in memory)", ge=1)
    embedding_budget_mb: float = param(DEFAULT_BUDGET_MB, "memory for the embeddings (MiB): float32 if probes + "
                                                          "gallery fit it, else float16", gt=0)


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

def resolve_testing_set(root: str | pathlib.Path) -> pathlib.Path:
    """The Testing_Set folder, given it, ``tinyface/`` or the folder holding ``tinyface/``; DataError otherwise."""
    base = pathlib.Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"{base}: folder not found. Set root to TinyFace's tinyface/{TESTING_SET} folder (from "
                        f"{RELEASE}) or a folder above it.")
    for candidate in (base, base / TESTING_SET, base / "tinyface" / TESTING_SET):
        if any((candidate / name).exists() for name in (PROBE_MAT, MATCH_MAT, PROBE_DIR, MATCH_DIR)):
            return candidate
    raise DataError(f"{base}: not a TinyFace test split: none of {PROBE_MAT}, {MATCH_MAT}, {PROBE_DIR}/, "
                    f"{MATCH_DIR}/ in it, in {TESTING_SET}/ or in tinyface/{TESTING_SET}/. Set root to the "
                    f"tinyface/{TESTING_SET} folder of {RELEASE}.")


def read_list(mat_path: pathlib.Path, keys: tuple[str, str]) -> tuple[list[str], np.ndarray]:
    """File names and integer ids, in file order, from a TinyFace ``*_img_ID_pairs.mat``; DataError on problems."""
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - scipy is a dependency
        raise DataError("reading TinyFace's .mat files needs scipy: pip install scipy") from None
    if not mat_path.is_file():
        raise DataError(f"{mat_path}: file not found. It is part of {RELEASE} (tinyface/{TESTING_SET}/"
                        f"{mat_path.name}).")
    try:
        data = scipy.io.loadmat(str(mat_path))
    except Exception as exc:
        raise DataError(f"{mat_path}: not a readable MATLAB v5 .mat file ({type(exc).__name__}: {exc}); restore it "
                        f"from {RELEASE}.") from None
    names_key, ids_key = keys
    for key in keys:
        if key not in data:
            found = sorted(k for k in data if not k.startswith("__")) or ["(none)"]
            raise DataError(f"{mat_path}: no variable {key!r} (found: {', '.join(found)}). Expected {names_key} "
                            f"(cell array of file names) and {ids_key} (identities).")
    cells = np.asarray(data[names_key], dtype=object).reshape(-1)
    ids = np.asarray(data[ids_key]).reshape(-1)
    if cells.size == 0 or cells.size != ids.size:
        raise DataError(f"{mat_path}: {names_key} has {cells.size} entries and {ids_key} {ids.size}; expected the "
                        "same non-zero number.")
    if ids.dtype.kind not in "iuf" or not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids)):
        raise DataError(f"{mat_path}: {ids_key} must hold whole numbers (identities), got dtype {ids.dtype}.")
    names = [cell_name(c, f"{mat_path} {names_key} entry {i + 1}", RELEASE) for i, c in enumerate(cells)]
    return names, ids.astype(np.int64)


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _locate(folder: pathlib.Path, names: list[str], mat: pathlib.Path) -> list[pathlib.Path]:
    """The listed names in ``folder`` (by name, else by stem with another image extension); DataError if absent."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found. It is part of {RELEASE} (tinyface/{TESTING_SET}/"
                        f"{folder.name}/), or of the copy named by images_dir.")
    by_name = {p.name: p for p in folder.iterdir()}
    by_stem: dict[str, pathlib.Path] = {}
    for p in by_name.values():
        if p.suffix.lower() in IMAGE_EXTS:
            by_stem.setdefault(p.stem, p)
    out = []
    for i, name in enumerate(names):
        path = by_name.get(name) or by_stem.get(pathlib.PurePath(name).stem)
        if path is None:
            raise DataError(f"{mat} entry {i + 1} names {name!r}, which is not in {folder}. Restore the folder from "
                            f"{RELEASE} (or the copy named by images_dir).")
        out.append(path)
    return out


def _prefix_id(name: str) -> int | None:
    head = pathlib.PurePath(name).name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


@dataclasses.dataclass(frozen=True)
class TinyFaceSet:
    testing_set: pathlib.Path
    images: pathlib.Path
    probes: list[pathlib.Path]
    probe_ids: np.ndarray
    gallery: list[pathlib.Path]
    gallery_ids: np.ndarray
    distractors: list[pathlib.Path]
    n_distractors_found: int
    prefix_mismatches: int


def load_tinyface(root: str | pathlib.Path, images_dir: str | None = None,
                  max_distractors: int | None = None) -> TinyFaceSet:
    folder = resolve_testing_set(root)
    images = pathlib.Path(images_dir).expanduser() if images_dir else folder
    if not images.is_absolute() and images_dir and not images.is_dir():
        images = folder / images_dir
    if not images.is_dir():
        raise DataError(f"{images}: images_dir not found; it must hold {PROBE_DIR}/, {MATCH_DIR}/ and "
                        f"{DISTRACTOR_DIR}/.")
    probe_names, probe_ids = read_list(folder / PROBE_MAT, PROBE_KEYS)
    match_names, match_ids = read_list(folder / MATCH_MAT, MATCH_KEYS)
    probes = _locate(images / PROBE_DIR, probe_names, folder / PROBE_MAT)
    gallery = _locate(images / MATCH_DIR, match_names, folder / MATCH_MAT)
    dis_dir = images / DISTRACTOR_DIR
    if not dis_dir.is_dir():
        raise DataError(f"{dis_dir}: folder not found. It is part of {RELEASE} (tinyface/{TESTING_SET}/"
                        f"{DISTRACTOR_DIR}/, 153,428 images), or of the copy named by images_dir.")
    distractors = _files(dis_dir)
    found = len(distractors)
    if max_distractors is not None:
        distractors = distractors[:max_distractors]
    absent = sorted(set(probe_ids.tolist()) - set(match_ids.tolist()))
    if absent:
        raise DataError(f"{folder / PROBE_MAT}: {len(absent)} probe identit{'y' if len(absent) == 1 else 'ies'} "
                        f"({', '.join(map(str, absent[:5]))}{'...' if len(absent) > 5 else ''}) have no image in "
                        f"{MATCH_MAT}; TinyFace is closed-set (every probe identity is in Gallery_Match). Restore "
                        f"both files from {RELEASE}.")
    if np.any(match_ids == DISTRACTOR_LABEL) or np.any(probe_ids == DISTRACTOR_LABEL):
        raise DataError(f"{folder}: an identity in the .mat files equals the distractor label {DISTRACTOR_LABEL}.")
    mismatches = sum(1 for n, i in zip(probe_names + match_names, np.concatenate([probe_ids, match_ids]))
                     if _prefix_id(n) is not None and _prefix_id(n) != int(i))
    return TinyFaceSet(folder, images, probes, probe_ids, gallery, match_ids, distractors, found, mismatches)


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------

def to_112(images: torch.Tensor, resize: str, *, mode: str = "bilinear", antialias: bool = True) -> torch.Tensor:
    """uint8 (N, 3, H, W) images of one size -> (N, 3, 112, 112) by the ``resize`` method; 112 x 112 unchanged."""
    h, w = images.shape[-2:]
    if (h, w) == (SIZE, SIZE):
        return images
    if resize == "stretch":
        return resize_to(images, (SIZE, SIZE), mode=mode, antialias=antialias)
    if resize == "center-crop":
        nh, nw = (int(SIZE * h / w), SIZE) if h > w else (SIZE, int(SIZE * w / h))
        big = resize_to(images, (nh, nw), mode=mode, antialias=antialias)
        top, left = int(round((nh - SIZE) / 2.0)), int(round((nw - SIZE) / 2.0))
        return big[:, :, top:top + SIZE, left:left + SIZE].contiguous()
    if resize in ("pad", "center-pad"):
        return pad_to_square(images, SIZE, centre=resize == "center-pad", mode=mode, antialias=antialias)
    raise ValueError(f"resize must be stretch, center-crop, pad or center-pad, got {resize!r}")


def _load_batch(paths: list[pathlib.Path], p: TinyFaceParams) -> tuple[torch.Tensor, int]:
    decoded = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read the image ({exc}). Restore it from {RELEASE}.") from None
        decoded.append(decode_image(data, str(path)))
    out = torch.empty((len(paths), 3, SIZE, SIZE), dtype=torch.uint8)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, arr in enumerate(decoded):
        by_shape.setdefault(arr.shape[:2], []).append(i)
    resized = 0
    for shape, idx in by_shape.items():
        batch = torch.from_numpy(np.stack([decoded[i] for i in idx])).permute(0, 3, 1, 2).contiguous()
        out[idx] = to_112(batch, p.resize, mode=p.interpolation, antialias=p.antialias)
        resized += 0 if shape == (SIZE, SIZE) else len(idx)
    return out, resized


# ---------------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------------

def mate_positions(probe: np.ndarray, probe_ids: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray,
                   distractors: np.ndarray, *, ties: str = "pessimistic", block: int = 256,
                   chunk: int = 16384, progress: bool = False) -> list[np.ndarray]:
    """Per probe, the 1-based positions of all its mate images in its ranked gallery (match + distractors).

    Embeddings must be L2-normalised float32 (cosine = dot product). Mate i (in descending score) sits at position
    i + 1 + (non-mates scoring above it); ``pessimistic`` counts non-mates with an equal score as above. Scores are
    computed ``block`` probes x ``chunk`` gallery images at a time; only per-mate counts are kept. ``gallery`` /
    ``distractors`` may be float16 (converted to float32 a chunk at a time); ``progress``: a bar over the probes.
    """
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32))
    d = np.asarray(distractors).reshape(-1, g.shape[1])
    gids = torch.from_numpy(np.asarray(gallery_ids, dtype=np.int64))
    out: list[np.ndarray] = []
    bar = tqdm(total=probe.shape[0], desc="tinyface: score", unit="probe", disable=not progress, dynamic_ncols=True)
    for start in range(0, probe.shape[0], block):
        pb = torch.from_numpy(np.ascontiguousarray(probe[start:start + block], dtype=np.float32))
        pid = torch.from_numpy(np.asarray(probe_ids[start:start + block], dtype=np.int64))
        mate = pid[:, None] == gids[None, :]                                    # (B, M)
        n_mates = mate.sum(1)
        kmax = int(n_mates.max())
        s_match = pb @ g.T
        mate_scores = torch.where(mate, s_match, torch.tensor(float("-inf")))
        mate_scores = mate_scores.sort(dim=1, descending=True).values[:, :kmax].contiguous()  # (B, K), -inf padded
        above = torch.zeros(mate_scores.shape, dtype=torch.int64)
        right = ties == "optimistic"  # optimistic: count only strictly greater
        for source, masked in ((g, True), (d, False)):
            for c in range(0, source.shape[0], chunk):
                part = source[c:c + chunk]
                if not masked:
                    part = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
                s = pb @ part.T
                if masked:
                    s = s.masked_fill(mate[:, c:c + chunk], float("-inf"))
                s = s.sort(dim=1).values.contiguous()
                above += s.shape[1] - torch.searchsorted(s, mate_scores, right=right)
        for row in range(pb.shape[0]):
            k = int(n_mates[row])
            out.append((np.arange(1, k + 1) + above[row, :k].numpy()).astype(np.int64))
        bar.update(pb.shape[0])
    bar.close()
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------------------------------------------------

class TinyFace(Protocol):
    """TinyFace closed-set identification: probes against Gallery_Match + 153,428 distractors, rank-1/5/10/20 and
    mAP, images ranked (not subjects), cosine of L2-normalised embeddings."""

    Params = TinyFaceParams

    def check(self) -> None:
        p = self.params
        folder = resolve_testing_set(p.root)
        missing = [str(folder / n) for n in (PROBE_MAT, MATCH_MAT) if not (folder / n).is_file()]
        images = pathlib.Path(p.images_dir).expanduser() if p.images_dir else folder
        if p.images_dir and not images.is_absolute() and not images.is_dir():
            images = folder / p.images_dir
        missing += [str(images / n) + "/" for n in (PROBE_DIR, MATCH_DIR, DISTRACTOR_DIR) if not (images / n).is_dir()]
        if missing:
            raise DataError(f"TinyFace test split incomplete, missing: {', '.join(missing)}. Restore them from "
                            f"{RELEASE} (tinyface/{TESTING_SET}/).")

    def _embed(self, embed: Embedder, paths: list[pathlib.Path], what: str, progress: bool,
               dtype: Any = None) -> np.ndarray:
        """L2-normalised embeddings of ``paths``, ``batch_size`` images decoded at a time (ops.batches)."""
        p = self.params

        def load(chunk: list[pathlib.Path]) -> torch.Tensor:
            batch, resized = _load_batch(chunk, p)
            self._resized += resized
            return batch

        return embed_batches(paths, load, embed, batch_size=p.batch_size, flip_sum=p.flip == "sum", normalise=True,
                             budget_mb=p.embedding_budget_mb, dtype=dtype, desc=f"tinyface: embed {what}",
                             progress=progress, what=what)

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        data = load_tinyface(p.root, p.images_dir, p.max_distractors)
        counts = {"n_probes": len(data.probes), "n_gallery": len(data.gallery), "n_distractors": len(data.distractors)}
        off = {k: (v, EXPECTED[k]) for k, v in counts.items() if v != EXPECTED[k]}
        if off:
            text = ", ".join(f"{k} {v} (release: {e})" for k, (v, e) in off.items())
            if p.require_complete:
                raise DataError(f"{data.testing_set}: not the complete release: {text}. Restore it from {RELEASE}, "
                                "or set require_complete: false.")
            log.warning("tinyface: %s; the numbers are not comparable with published TinyFace results", text)
        self._resized = 0
        probe = self._embed(embed, data.probes, "probes", progress)
        n_match = len(data.gallery)
        n_images = len(data.probes) + n_match + len(data.distractors)
        dtype = embedding_dtype(n_images, probe.shape[1], p.embedding_budget_mb)
        # Gallery_Match + distractors in one preallocated array (one phase); views split it without a copy
        both = self._embed(embed, data.gallery + data.distractors, "gallery", progress, dtype=dtype)
        if both.shape[1] != probe.shape[1]:
            raise ValueError("the embedder returned embeddings of different dimensions for probes and gallery")
        gallery, distractors = both[:n_match], both[n_match:]


        positions = mate_positions(probe, data.probe_ids, gallery, data.gallery_ids, distractors, ties=p.ties,
                                   block=p.block, chunk=p.chunk, progress=progress)
        ranks = np.array([pos[0] for pos in positions], dtype=np.int64)
        ap = average_precision(positions, rule=p.ap_rule)
        n_total = counts["n_gallery"] + counts["n_distractors"]
        max_rank = min(n_total, 1000)
        rates = cmc(ranks, max_rank)
        metrics: dict[str, Any] = {f"rank{k}": rank_k_accuracy(ranks, k) for k in RANKS}
        metrics["map"] = float(ap.mean())
        metrics.update(counts)
        row = {"set": "identification", **{f"rank{k}": metrics[f"rank{k}"] for k in RANKS}, "map": metrics["map"],
               **counts}
        xs, ys = thin_curve(np.arange(1, max_rank + 1), rates)
        curves = {f"cmc:{KEY}": {"rank": [int(x) for x in xs], "rate": ys}}
        settings = {
            "procedure": "closed-set identification, images ranked: probe rank = position of its best mate image "
                         "among Gallery_Match + Gallery_Distractor by cosine of L2-normalised embeddings; rank-k = "
                         "fraction of probes with rank <= k over all probes",
            "similarity": "cosine (dot product of L2-normalised embeddings, float32, streamed in blocks)",
            "ties": p.ties,
            "map": f"mean over probes of the average precision ({p.ap_rule}"
                   + (": the release's Market-1501 compute_AP, trapezoid over recall steps)" if p.ap_rule == "trapezoid"
                      else ": plain non-interpolated AP)")
                   + ", every Gallery_Match image of the probe's identity relevant",
            "labels": "identities from probe_img_ID_pairs.mat / gallery_match_img_ID_pairs.mat; distractors "
                      f"labelled {DISTRACTOR_LABEL} (never a mate)",
            "id_prefix_mismatches": data.prefix_mismatches,
            "testing_set": str(data.testing_set),
            "images": str(data.images),
            "distractors_found": data.n_distractors_found,
            "max_distractors": p.max_distractors,
            "expected_counts": dict(EXPECTED),
            "complete": not off,
            "resize": {"stretch": "stretch: resized straight to 112x112, aspect not kept",
                       "center-crop": "center-crop: short side to 112, centre 112x112 square cropped",
                       "pad": "pad: aspect kept, long side 112, top-left on a black 112x112 square",
                       "center-pad": "center-pad: aspect kept, long side 112, centred on a black 112x112 square"}[
                p.resize],
            "interpolation": p.interpolation,
            "antialias": p.antialias,
            "resized_images": self._resized,
            "flip": ("sum: embedding of the image + embedding of its mirror, then L2-normalised" if p.flip == "sum"
                     else "none"),
            "input": "uint8 RGB (N, 3, 112, 112)",
            "embedding_dtype": f"{np.dtype(dtype).name} (probes + gallery {n_images} x {probe.shape[1]} float32 = "
                               f"{n_images * probe.shape[1] * 4 / 2 ** 20:.0f} MiB against embedding_budget_mb "
                               f"{p.embedding_budget_mb:g}); images decoded {p.batch_size} at a time",
            "cmc_max_rank": max_rank,
            "compare_with": "AdaFace README / CVPR 2022 TinyFace rank-1 / rank-5 (%): R100 WebFace12M 72.29 / "
                            "74.97, WebFace4M 72.02 / 74.52, MS1MV2 68.21 / 71.54 - measured on AdaFace's "
                            "MTCNN-aligned 112x112 copy with flip test (pre_norm_vector_add), BGR input",
        }
        return ProtocolResult("tinyface", [row], settings, results={KEY: metrics}, curves=curves)
