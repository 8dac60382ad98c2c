"""SCface closed-set identification: rank-1 and CMC per distance, day (visible) and night (IR) (PROTOCOLS §5).

**Input: an aligned copy of the release, in the release's layout and naming** (``root``):

* ``mugshot_frontal_cropped_all/NNN_frontal.jpg``: the gallery, one frontal mugshot per subject (130);
* ``surveillance_cameras_distance_{1,2,3}/<any sub-folders>/NNN_camC_D.jpg``: the probes, C = camera 1..7, D = the
  distance label; or, when those folders are absent, the flat ``surveillance_cameras_all/`` (or any ``probe_dir``,
  e.g. the study's crop folder);
* ``surveillance_cameras_IR_cam8/NNN_cam8.jpg``: the IR mugshots, used only with ``night_gallery: cam8``.

The release's faces are **not aligned**; this protocol does no detection or alignment. Align every image first
(e.g. with the 5-point landmarks of ``johnnysclai/Deep-Siamese-network-for-LRFR data/scface_*.csv`` or an MTCNN
step, as the founding study did) to InsightFace's 112x112 template, keeping the file names. Images of another size
are brought to 112x112 with one warning, by the ``resize`` policy: ``topleft-pad`` is the study's ``square_crop``
(aspect kept, bilinear without anti-aliasing as cv2 INTER_LINEAR, pasted at the top-left of a black square;
PROTOCOLS §4.6), ``center-pad`` the same centred, ``stretch`` an anti-aliased bilinear resize to 112x112.

**Distance labels run backwards**: label 1 = 4.20 m (farthest, smallest faces), 2 = 2.60 m, 3 = 1.00 m. Keys
``d1``, ``d2``, ``d3`` are the day probes (visible cameras 1-5) at labels 1, 2, 3; ``d1-night`` ... the IR cameras
6-7, present only when the copy holds IR probes at that distance (scored by default against the visible frontal
gallery, the LRFR papers' night variant; ``night_gallery: cam8`` uses the IR mugshots, as bob's ``IR`` protocol).

**Scoring**: cosine of L2-normalised embeddings (no flip unless ``flip``), ranks from
:mod:`lrfr_plugins.metrics.identification` with ties counted **pessimistically** (an impostor with the same score
ranks first; the study's ``argmax`` breaks ties by file order instead). Rank-1 = correct / probes scored: the
denominator is the number of probe files found (the study's; PROTOCOLS §0.10). Each image is embedded once.

**Probes whose subject has no gallery image**: an error by default (a closed-set copy with a missing mugshot is
broken); ``missing_gallery: skip`` drops them, and the number dropped per key is in ``rows`` and ``settings``.

Presets (fill every parameter left null; an explicit value wins):

* ``lozhkina`` (the founding study, ``test.py`` ``testSCface``): all subjects in the gallery folder, the probes
  found (no completeness check), ``topleft-pad``. The study reported Day only (``d1``-``d3``).
* ``lai-lam`` (the LRFR papers' 130/650 protocol): all subjects, and the copy must be complete (130 mugshots, every
  subject x day camera per distance: 650 probes; 260 per night key when IR probes are present), ``stretch``. Lai &
  Lam's code computes flip features but scores with ``cal_type 'normal'`` (no flip), so ``flip`` stays ``none``.
* ``bob-dev`` / ``bob-eval``: rank-1 restricted to ``bob.db.scface``'s dev (subjects 44-87) or eval (88-130)
  subjects; gallery = those subjects' mugshots. bob's own protocols are verification, not rank-1 (§5.4).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ...api import Embedder, Protocol, ProtocolResult, param
from ...errors import DataError
from ...formats.images import decode_image
from ...metrics.identification import closed_set
from ...ops.resize import pad_to_square, resize_to

log = logging.getLogger("lrfr")

SIZE = 112
#: distance label -> metres (label 1 is the FARTHEST).
DISTANCE_M: dict[int, float] = {1: 4.20, 2: 2.60, 3: 1.00}
#: bob.db.scface client groups (inclusive subject-id ranges); "all" = every subject found.
GROUPS: dict[str, tuple[int, int]] = {"all": (1, 130), "world": (1, 43), "dev": (44, 87), "eval": (88, 130)}
GALLERY_DIR = "mugshot_frontal_cropped_all"
DISTANCE_DIR = "surveillance_cameras_distance_{}"
ALL_DIR = "surveillance_cameras_all"
IR_MUGSHOT_DIR = "surveillance_cameras_IR_cam8"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}

PROBE_RE = re.compile(r"^(\d{3})_cam([1-7])_([1-3])$")
FRONTAL_RE = re.compile(r"^(\d{3})_frontal$")
CAM8_RE = re.compile(r"^(\d{3})_cam8$")
PROBE_PATTERN = "NNN_camC_D.jpg (NNN = 3-digit subject id, C = camera 1-7, D = distance label 1-3; e.g. 001_cam1_1.jpg)"
FRONTAL_PATTERN = "NNN_frontal.jpg (NNN = 3-digit subject id; e.g. 001_frontal.jpg)"
CAM8_PATTERN = "NNN_cam8.jpg (NNN = 3-digit subject id; e.g. 001_cam8.jpg)"

Preset = Literal["lozhkina", "lai-lam", "bob-dev", "bob-eval"]
Resize = Literal["stretch", "topleft-pad", "center-pad"]
Subjects = Literal["all", "world", "dev", "eval"]

PRESETS: dict[str, dict[str, Any]] = {
    "lozhkina": {"subjects": "all", "require_complete": False, "resize": "topleft-pad"},
    "lai-lam": {"subjects": "all", "require_complete": True, "resize": "stretch"},
    "bob-dev": {"subjects": "dev", "require_complete": False, "resize": "stretch"},
    "bob-eval": {"subjects": "eval", "require_complete": False, "resize": "stretch"},
}
FROM_PRESET = "null: from the preset"


@dataclasses.dataclass(frozen=True)
class SCfaceParams:
    root: str = param(doc="an ALIGNED (112x112) copy of SCface in the release's layout and names: "
                          "mugshot_frontal_cropped_all/NNN_frontal.jpg, surveillance_cameras_distance_{1,2,3}/"
                          "<cam>/NNN_camC_D.jpg (or surveillance_cameras_all/), surveillance_cameras_IR_cam8/")
    preset: Preset = param("lozhkina", "fills the parameters left null: lozhkina (the founding study: probes found, "
                                       "top-left pad), lai-lam (130 mugshots / 650 probes required, stretch), "
                                       "bob-dev / bob-eval (bob.db.scface's subjects 44-87 / 88-130)")
    subjects: Subjects | None = param(None, f"subjects scored: all, or bob's world (1-43), dev (44-87), eval (88-130) "
                                            f"({FROM_PRESET})")
    require_complete: bool | None = param(None, "require every mugshot of the subject group and every subject x camera "
                                                f"probe per distance (130/650 for all) ({FROM_PRESET})")
    resize: Resize | None = param(None, "how a non-112x112 image is brought to 112x112: topleft-pad (the study's "
                                        "square_crop), center-pad, stretch (anti-aliased bilinear) "
                                        f"({FROM_PRESET})")
    gallery_dir: str = param(GALLERY_DIR, "gallery folder (relative to root, or absolute) of NNN_frontal images")
    probe_dir: str | None = param(None, "probe folder (relative to root, or absolute; searched recursively) of "
                                        "NNN_camC_D images; null: surveillance_cameras_distance_{1,2,3}/ if present, "
                                        "else surveillance_cameras_all/")
    ir_gallery_dir: str = param(IR_MUGSHOT_DIR, "folder of the NNN_cam8 IR mugshots (only for night_gallery: cam8)")
    distances: list[int] = param([1, 2, 3], "distance labels scored: 1 = 4.20 m (farthest), 2 = 2.60 m, 3 = 1.00 m")
    day_cameras: list[int] = param([1, 2, 3, 4, 5], "visible (day) probe cameras")
    night_cameras: list[int] = param([6, 7], "IR (night) probe cameras, scored when present (bob's IR protocol "
                                             "drops cam6 through its 'cma6' typo: [7] reproduces it)")
    night: bool = param(True, "also score the night (IR) probes, as keys d1-night ..., when the copy holds any")
    night_gallery: Literal["frontal", "cam8"] = param("frontal", "gallery of the night keys: the visible frontal "
                                                                 "mugshots (LRFR papers) or the cam8 IR mugshots (bob)")
    missing_gallery: Literal["error", "skip"] = param("error", "a probe whose subject has no gallery image: error, or "
                                                               "skip it (counted per key)")
    flip: Literal["none", "sum", "concat"] = param("none", "also embed the mirrored image and sum or concatenate "
                                                           "the two embeddings (none: the study's and Lai & Lam's)")
    max_rank: int = param(20, "the CMC curve runs over ranks 1..max_rank", ge=1)
    batch_size: int = param(128, "images per embed call", ge=1)

    def __post_init__(self) -> None:
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if not self.distances or len(set(self.distances)) != len(self.distances) or \
                any(d not in DISTANCE_M for d in self.distances):
            raise ValueError(f"distances must be distinct labels from 1, 2, 3 (1 = 4.20 m, farthest), got "
                             f"{self.distances}")
        for name in ("day_cameras", "night_cameras"):
            cams = getattr(self, name)
            if len(set(cams)) != len(cams) or any(c < 1 or c > 7 for c in cams):
                raise ValueError(f"{name} must be distinct cameras from 1..7, got {cams}")
        if not self.day_cameras:
            raise ValueError("day_cameras must not be empty")
        if set(self.day_cameras) & set(self.night_cameras):
            raise ValueError(f"day_cameras {self.day_cameras} and night_cameras {self.night_cameras} overlap")


@dataclasses.dataclass(frozen=True)
class _Image:
    path: pathlib.Path
    subject: int
    camera: int  # 0 = frontal mugshot, 8 = IR mugshot
    distance: int  # 0 for mugshots


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """Image files under ``folder`` (recursive, sorted); hidden files and non-image files are not considered."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS)


def _scan_mugshots(folder: pathlib.Path, regex: re.Pattern, pattern: str, camera: int, what: str) -> list[_Image]:
    if not folder.is_dir():
        raise DataError(f"{folder}: the {what} folder does not exist. Expected {pattern} files there (an aligned "
                        "copy in the release's layout), or set the folder parameter to where they are.")
    images, seen = [], {}
    for path in _image_files(folder):
        m = regex.match(path.stem)
        if not m:
            raise DataError(f"{path}: unexpected file name in the {what} folder; expected {pattern}. Rename or "
                            "remove it.")
        sid = int(m.group(1))
        if sid in seen:
            raise DataError(f"{path}: a second {what} image of subject {sid:03d} (the first is {seen[sid]}); keep "
                            "one per subject.")
        seen[sid] = path
        images.append(_Image(path, sid, camera, 0))
    if not images:
        raise DataError(f"{folder}: the {what} folder has no images; expected {pattern} files (.jpg, .jpeg, .png "
                        "or .bmp).")
    return images


def _scan_probes(folder: pathlib.Path, distance: int | None) -> tuple[list[_Image], int]:
    """Probe images under ``folder``; ``distance``: the folder's label, checked against each name. Mugshot names
    (NNN_frontal, NNN_cam8) are ignored and counted; any other image name is an error."""
    images, ignored = [], 0
    for path in _image_files(folder):
        m = PROBE_RE.match(path.stem)
        if not m:
            if FRONTAL_RE.match(path.stem) or CAM8_RE.match(path.stem):
                ignored += 1
                continue
            raise DataError(f"{path}: cannot parse the SCface probe name {path.name!r}; expected {PROBE_PATTERN}. "
                            "Rename or remove it.")
        sid, cam, dist = (int(g) for g in m.groups())
        if distance is not None and dist != distance:
            raise DataError(f"{path}: distance label {dist} in the name but the file is in the distance-{distance} "
                            f"folder; move it to {DISTANCE_DIR.format(dist)}/.")
        images.append(_Image(path, sid, cam, dist))
    return images, ignored


def _pad_resize(image: torch.Tensor, centre: bool) -> torch.Tensor:
    """The study's ``square_crop`` (cv2-INTER_LINEAR-like bilinear, no anti-aliasing), top-left or centred."""
    return pad_to_square(image[None], SIZE, centre=centre)[0]


class SCface(Protocol):
    """SCface rank-1 / CMC per distance (d1 = 4.20 m farthest), day and night, on an aligned copy of the release."""

    Params = SCfaceParams

    # ------------------------------------------------------------------ data
    def _resolve(self, sub: str) -> pathlib.Path:
        return pathlib.Path(self.params.root).expanduser() / pathlib.Path(sub).expanduser()

    def _probes(self, root: pathlib.Path) -> tuple[list[_Image], int, str]:
        p = self.params
        if p.probe_dir is not None:
            folder = self._resolve(p.probe_dir)
            if not folder.is_dir():
                raise DataError(f"{folder}: the probe folder (probe_dir) does not exist; set probe_dir to a folder "
                                f"of {PROBE_PATTERN} images, or to null for the release's folders.")
            images, ignored = _scan_probes(folder, None)
            source = str(folder)
        else:
            dist_dirs = {d: root / DISTANCE_DIR.format(d) for d in DISTANCE_M}
            if any(f.is_dir() for f in dist_dirs.values()):
                images, ignored, used = [], 0, []
                for d in p.distances:
                    if not dist_dirs[d].is_dir():
                        raise DataError(f"{dist_dirs[d]}: the probe folder of distance label {d} "
                                        f"({DISTANCE_M[d]:.2f} m) does not exist; add it, or leave {d} out of "
                                        "distances.")
                    found, n = _scan_probes(dist_dirs[d], d)
                    images += found
                    ignored += n
                    used.append(dist_dirs[d].name)
                source = ", ".join(used)
            elif (root / ALL_DIR).is_dir():
                images, ignored = _scan_probes(root / ALL_DIR, None)
                source = ALL_DIR
            else:
                raise DataError(f"{root}: no probe folder: expected {DISTANCE_DIR.format('{1,2,3}')}/ (or "
                                f"{ALL_DIR}/) holding {PROBE_PATTERN} images, or set probe_dir.")
        seen: dict[tuple[int, int, int], pathlib.Path] = {}
        for im in images:
            key = (im.subject, im.camera, im.distance)
            if key in seen:
                raise DataError(f"{im.path}: a second copy of probe {im.path.stem} (the first is {seen[key]}); "
                                "keep one.")
            seen[key] = im.path
        return images, ignored, source

    def _load(self, path: pathlib.Path) -> torch.Tensor:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read the image ({exc.strerror}).") from None
        image = torch.from_numpy(decode_image(data, where=str(path))).permute(2, 0, 1).contiguous()
        if tuple(image.shape[1:]) == (SIZE, SIZE):
            return image
        if self._resized == 0:
            log.warning("%s is %dx%d, not an aligned 112x112 face: bringing it (and any other such image) to "
                        "112x112 by %s. Align SCface to InsightFace's 112x112 template for comparable numbers.",
                        path, image.shape[2], image.shape[1], self.params.resize)
        self._resized += 1
        if self.params.resize == "stretch":
            return resize_to(image[None], (SIZE, SIZE))[0]
        return _pad_resize(image, centre=self.params.resize == "center-pad")

    def _embed_all(self, embed: Embedder, paths: list[pathlib.Path], progress: bool) -> np.ndarray:
        p = self.params
        chunks = []
        starts = range(0, len(paths), p.batch_size)
        for start in tqdm(starts, desc="eval scface", unit="batch", disable=not progress):
            batch = torch.stack([self._load(path) for path in paths[start:start + p.batch_size]])
            emb = self._call(embed, batch)
            if p.flip != "none":
                mirrored = self._call(embed, batch.flip(-1))
                emb = emb + mirrored if p.flip == "sum" else np.concatenate([emb, mirrored], axis=1)
            chunks.append(emb)
        return np.concatenate(chunks, axis=0)

    @staticmethod
    def _call(embed: Embedder, batch: torch.Tensor) -> np.ndarray:
        out = embed(batch)
        out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        if out.ndim != 2 or out.shape[0] != batch.shape[0]:
            raise ValueError(f"the embedder returned shape {out.shape} for {batch.shape[0]} images; expected "
                             f"({batch.shape[0]}, D)")
        return out.astype(np.float64, copy=False)

    # -------------------------------------------------------------- evaluate
    def check(self) -> None:
        root = pathlib.Path(self.params.root).expanduser()
        for folder, what in ((root, "SCface root"), (self._resolve(self.params.gallery_dir), "gallery folder")):
            if not folder.is_dir():
                raise DataError(f"{folder}: the {what} does not exist. Set root to an aligned 112x112 copy of SCface "
                                f"in the release's layout ({GALLERY_DIR}/ and the surveillance folders).")

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:
        p = self.params
        root = pathlib.Path(p.root).expanduser()
        if not root.is_dir():
            raise DataError(f"SCface root {root} does not exist (or is not a folder). Set root to an aligned "
                            f"112x112 copy of SCface in the release's layout: {GALLERY_DIR}/{FRONTAL_PATTERN.split()[0]}"
                            f" and {DISTANCE_DIR.format('{1,2,3}')}/<cam>/{PROBE_PATTERN.split()[0]}.")
        self._resized = 0
        lo, hi = GROUPS[p.subjects]
        in_group = (lambda s: True) if p.subjects == "all" else (lambda s: lo <= s <= hi)

        gallery_dir = self._resolve(p.gallery_dir)
        gallery = [g for g in _scan_mugshots(gallery_dir, FRONTAL_RE, FRONTAL_PATTERN, 0, "gallery (frontal mugshot)")
                   if in_group(g.subject)]
        if not gallery:
            raise DataError(f"{gallery_dir}: no frontal mugshot of the {p.subjects!r} subjects ({lo:03d}-{hi:03d}); "
                            "the gallery is empty.")
        probes, ignored, probe_source = self._probes(root)
        probes = [im for im in probes if in_group(im.subject) and im.distance in p.distances]

        # the conditions: (key, time, distance, cameras, gallery)
        conditions = []
        for d in p.distances:
            conditions.append((f"d{d}", "day", d, p.day_cameras))
        night_present = p.night and any(im.camera in p.night_cameras for im in probes)
        if night_present:
            for d in p.distances:
                if any(im.camera in p.night_cameras and im.distance == d for im in probes):
                    conditions.append((f"d{d}-night", "night", d, p.night_cameras))

        ir_gallery: list[_Image] = []
        if night_present and p.night_gallery == "cam8":
            ir_dir = self._resolve(p.ir_gallery_dir)
            ir_gallery = [g for g in _scan_mugshots(ir_dir, CAM8_RE, CAM8_PATTERN, 8, "IR mugshot (cam8)")
                          if in_group(g.subject)]
            if not ir_gallery:
                raise DataError(f"{ir_dir}: no cam8 IR mugshot of the {p.subjects!r} subjects; the night gallery is "
                                "empty (or set night_gallery: frontal).")

        selected: dict[str, list[_Image]] = {}
        skipped: dict[str, int] = {}
        for key, time, d, cams in conditions:
            gal = ir_gallery if (time == "night" and p.night_gallery == "cam8") else gallery
            gal_subjects = {g.subject for g in gal}
            chosen = [im for im in probes if im.distance == d and im.camera in cams]
            if not chosen:
                raise DataError(f"{root}: no {time} probe (cameras {cams}) at distance label {d} "
                                f"({DISTANCE_M[d]:.2f} m) in {probe_source}; expected {PROBE_PATTERN} files, or "
                                "leave the distance out of distances.")
            orphans = [im for im in chosen if im.subject not in gal_subjects]
            if orphans and p.missing_gallery == "error":
                folder = gal[0].path.parent
                raise DataError(f"{orphans[0].path}: subject {orphans[0].subject:03d} has no gallery image in "
                                f"{folder} ({len(orphans)} {key} probe(s) of {len({o.subject for o in orphans})} "
                                "subject(s) are affected). Add the missing mugshots, or set missing_gallery: skip "
                                "to leave these probes out (they are counted).")
            selected[key] = [im for im in chosen if im.subject in gal_subjects]
            skipped[key] = len(orphans)
            if not selected[key]:
                raise DataError(f"{root}: every {key} probe belongs to a subject without a gallery image; nothing "
                                "to score.")
        if p.require_complete:
            self._check_complete(gallery, ir_gallery, selected, skipped, conditions, gallery_dir)

        # embed every image once: the frontal gallery serves day and night keys
        all_probes = sorted({im.path for ims in selected.values() for im in ims})
        paths = [g.path for g in gallery] + [g.path for g in ir_gallery] + all_probes
        emb = self._embed_all(embed, paths, progress)
        row_of = {path: i for i, path in enumerate(paths)}
        gallery_emb = emb[: len(gallery)]
        ir_emb = emb[len(gallery): len(gallery) + len(ir_gallery)]

        rows, results, curves = [], {}, {}
        for key, time, d, cams in conditions:
            night_cam8 = time == "night" and p.night_gallery == "cam8"
            gal, gemb = (ir_gallery, ir_emb) if night_cam8 else (gallery, gallery_emb)
            ims = selected[key]
            found = closed_set(emb[[row_of[im.path] for im in ims]], np.array([im.subject for im in ims]), gemb,
                               np.array([g.subject for g in gal]), max_rank=p.max_rank)
            rows.append({"key": key, "time": time, "distance_label": d, "distance_m": DISTANCE_M[d],
                         "cameras": ",".join(str(c) for c in sorted({im.camera for im in ims})),
                         "n_gallery": len(gal), "n_probes": len(ims), "skipped": skipped[key],
                         "rank1": found["rank1"], "rank5": found["rank5"]})
            results[key] = {"rank1": found["rank1"], "n_probes": len(ims)}
            curves[f"cmc:{key}"] = {"rank": list(range(1, p.max_rank + 1)),
                                    "rate": [round(float(r), 6) for r in found["cmc"]]}

        settings = {
            "procedure": "closed-set identification: cosine of L2-normalised embeddings, rank of the true subject "
                         "among gallery subjects, ties pessimistic; rank-1 = correct / probes scored",
            "preset": p.preset, "subjects": p.subjects, "require_complete": p.require_complete,
            "distances": {f"d{d}": f"label {d} = {DISTANCE_M[d]:.2f} m" + (" (farthest)" if d == 1 else
                                                                           " (closest)" if d == 3 else "")
                          for d in p.distances},
            "day_cameras": list(p.day_cameras), "night_cameras": list(p.night_cameras),
            "night_keys": [c[0] for c in conditions if c[1] == "night"],
            "night_gallery": p.night_gallery if night_present else None,
            "gallery": str(gallery_dir), "n_gallery": len(gallery), "probes": probe_source,
            "missing_gallery": p.missing_gallery, "skipped": skipped,
            "ignored_mugshots_in_probe_folders": ignored,
            "resize": p.resize, "resized_images": self._resized, "flip": p.flip, "max_rank": p.max_rank,
            "denominator": "probes found (the study's); the LRFR papers' is 650 per day distance "
                           "(require_complete enforces it)",
        }
        return ProtocolResult("scface", rows, settings, results=results, curves=curves, preset=p.preset)

    def _check_complete(self, gallery, ir_gallery, selected, skipped, conditions, gallery_dir) -> None:
        p = self.params
        lo, hi = GROUPS[p.subjects]
        expected = set(range(lo, hi + 1))
        missing = sorted(expected - {g.subject for g in gallery})
        if missing:
            shown = ", ".join(f"{s:03d}_frontal" for s in missing[:5])
            raise DataError(f"{gallery_dir}: {len(missing)} of {len(expected)} frontal mugshots of the "
                            f"{p.subjects!r} subjects are missing ({shown}{' ...' if len(missing) > 5 else ''}); "
                            "require_complete (preset lai-lam) needs all of them. Complete the copy, or set "
                            "require_complete: false to score what is there.")
        if ir_gallery:
            missing = sorted(expected - {g.subject for g in ir_gallery})
            if missing:
                raise DataError(f"{ir_gallery[0].path.parent}: {len(missing)} cam8 IR mugshots are missing (first "
                                f"{missing[0]:03d}_cam8); require_complete needs all of them.")
        for key, _, d, cams in conditions:
            have = {(im.subject, im.camera) for im in selected[key]}
            want = [(s, c) for s in sorted(expected) for c in cams]
            absent = [f"{s:03d}_cam{c}_{d}" for s, c in want if (s, c) not in have]
            if absent:
                raise DataError(f"{self.params.root}: {len(absent)} of {len(want)} {key} probes are missing "
                                f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}); require_complete "
                                "(preset lai-lam) needs every subject x camera. Complete the copy, or set "
                                "require_complete: false to score the probes found (the study's denominator).")
