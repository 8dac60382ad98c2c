"""Benchmark: ``lrfr eval MODEL -p tinyface`` at scale on the CPU - images/second and peak memory.

Writes a TinyFace-layout test split (``tinyface/Testing_Set``: ``Probe/``, ``Gallery_Match/``, ``Gallery_Distractor/``
and the two ``*_img_ID_pairs.mat`` lists) of synthetic faces (:class:`lrfr_plugins.synthetic.SyntheticFaceGenerator`,
test split) downscaled to TinyFace-like native sizes (each side 16-40 px, drawn per image) and saved as JPEG
(quality 90), then runs the ``tinyface`` protocol on it with the demo model in a fresh process and appends one JSON
line per run to ``eval/results/bench_eval_gallery.jsonl``:

* ``images_per_s``: probes + gallery images / seconds spent reading, decoding, resizing and embedding them (the two
  embed phases; scoring timed apart as ``score_s``);
* ``peak_rss_mib``: the process's peak resident memory (``resource.getrusage``), with ``rss_before_eval_mib``
  (after importing and loading the model) to show what the evaluation added;
* ``decoded_all_mib``: what holding every decoded 3 x 112 x 112 image would take (the unbounded alternative).

    python eval/bench_eval_gallery.py [--model /tmp/demo] [--probes 500] [--match 1000] [--distractors 4000]
                                      [--repeats 3] [--root /tmp/lrfr-bench-tinyface] [--batch-size 512]

Gallery = ``--match`` + ``--distractors`` images. The folder is built once per size and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_eval_gallery.jsonl"
FULL = 3728 + 4443 + 153428  # TinyFace's probes + gallery (match 4,443 + distractors 153,428 = 157,871) = 161,599


def build(root: pathlib.Path, probes: int, match: int, distractors: int, seed: int = 0) -> pathlib.Path:
    """The Testing_Set folder for these counts under root (built if absent)."""
    import scipy.io
    from PIL import Image

    from lrfr_plugins.synthetic import SyntheticFaceGenerator

    ts = root / f"p{probes}_m{match}_d{distractors}" / "tinyface" / "Testing_Set"
    if (ts / "done").is_file():
        return ts
    gen = SyntheticFaceGenerator(seed, "test")
    rng = np.random.default_rng(seed)
    per_id = max(1, match // probes)
    # probe identity i: probe image sample 0, gallery images samples 1..per_id; distractors: identities >= probes
    jobs = [("Probe", f"{i}_1.jpg", i, 0) for i in range(probes)]
    jobs += [("Gallery_Match", f"{i}_{k + 2}.jpg", i, k + 1) for k in range(per_id) for i in range(probes)][:match]
    jobs += [("Gallery_Distractor", f"{j // 1000:03d}/d_{j:06d}.jpg", probes + j, 0) for j in range(distractors)]
    for sub in ("Probe", "Gallery_Match", "Gallery_Distractor"):
        (ts / sub).mkdir(parents=True, exist_ok=True)
    for start in range(0, len(jobs), 512):
        part = jobs[start:start + 512]
        faces = gen.render(np.array([j[2] for j in part]), np.array([j[3] for j in part]))
        sizes = rng.integers(16, 41, size=(len(part), 2))
        for (sub, name, *_), face, (h, w) in zip(part, faces, sizes):
            path = ts / sub / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(face).resize((int(w), int(h)), Image.BILINEAR).save(path, quality=90)
    probe_jobs = [j for j in jobs if j[0] == "Probe"]
    match_jobs = [j for j in jobs if j[0] == "Gallery_Match"]
    cells = lambda names: np.array(names, dtype=object).reshape(-1, 1)  # noqa: E731
    scipy.io.savemat(str(ts / "probe_img_ID_pairs.mat"), {"probe_set": cells([j[1] for j in probe_jobs]),
                                                           "probe_ids": np.array([[j[2]] for j in probe_jobs], float)})
    scipy.io.savemat(str(ts / "gallery_match_img_ID_pairs.mat"),
                     {"gallery_set": cells([j[1] for j in match_jobs]),
                      "gallery_ids": np.array([[j[2]] for j in match_jobs], float)})
    (ts / "done").write_text("ok")
    return ts


def child(args) -> None:
    """One evaluation in this (fresh) process; prints one JSON object."""
    import resource

    import lrfr_plugins
    from lrfr_plugins.builtin.protocols import tinyface
    from lrfr_plugins.engine.models import load_model

    def rss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if args.threads:
        __import__("torch").set_num_threads(args.threads)
    model = load_model(args.model, registry=lrfr_plugins.get_registry(), device="cpu", batch_size=256)
    times = {"embed": 0.0, "score": 0.0}
    counts = {"embedded": 0}
    real_embed, real_score = tinyface.embed_batches, tinyface.mate_positions

    def timed_embed(items, *a, **k):
        t = time.perf_counter()
        out = real_embed(items, *a, **k)
        times["embed"] += time.perf_counter() - t
        counts["embedded"] += len(items)
        return out

    def timed_score(*a, **k):
        t = time.perf_counter()
        out = real_score(*a, **k)
        times["score"] += time.perf_counter() - t
        return out

    tinyface.embed_batches, tinyface.mate_positions = timed_embed, timed_score
    before = rss_mib()
    protocol = lrfr_plugins.create("protocol", "tinyface", root=args.testing_set, batch_size=args.batch_size)
    t0 = time.perf_counter()
    result = protocol.evaluate(model.embed, progress=args.progress)
    total = time.perf_counter() - t0
    r = result.results["identification"]
    print(json.dumps({"images": counts["embedded"], "embed_s": times["embed"], "score_s": times["score"],
                      "eval_s": total, "images_per_s": counts["embedded"] / times["embed"],
                      "rss_before_eval_mib": before, "peak_rss_mib": rss_mib(),
                      "embedding_dtype": result.settings["embedding_dtype"], "rank1": r["rank1"], "map": r["map"],
                      "torch_threads": __import__("torch").get_num_threads()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="/tmp/demo")
    ap.add_argument("--probes", type=int, default=500)
    ap.add_argument("--match", type=int, default=1000)
    ap.add_argument("--distractors", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--root", default="/tmp/lrfr-bench-tinyface")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads in the evaluation (0: torch's default)")
    ap.add_argument("--note", default="", help="free text stored with the result (e.g. 'machine shared')")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--testing-set", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    t = time.perf_counter()
    ts = build(pathlib.Path(args.root), args.probes, args.match, args.distractors)
    build_s = time.perf_counter() - t
    runs = []
    for _ in range(args.repeats):
        cmd = [sys.executable, __file__, "--child", "--testing-set", str(ts), "--model", args.model,
               "--batch-size", str(args.batch_size), "--threads", str(args.threads)] + (
                   ["--progress"] if args.progress else [])
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=os.environ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), file=sys.stderr)
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("images_per_s", "embed_s", "score_s", "eval_s", "peak_rss_mib", "rss_before_eval_mib")}
    n_gallery = args.match + args.distractors
    row = {
        "bench": "eval_gallery", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": args.model,
        "probes": args.probes, "gallery_match": args.match, "distractors": args.distractors,
        "gallery": n_gallery, "images": runs[0]["images"], "batch_size": args.batch_size, "repeats": args.repeats,
        "median": med, "runs": runs, "threads": args.threads or runs[0]["torch_threads"], "build_s": build_s,
        "decoded_all_mib": runs[0]["images"] * 3 * 112 * 112 / 2 ** 20,
        "extrapolated_full_embed_s": FULL / med["images_per_s"],
        "extrapolation_note": f"{FULL} TinyFace images / the median images_per_s (embed phases only; an "
                              "extrapolation, not a measurement; scoring grows with probes x gallery)",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "note": args.note,
        "python": platform.python_version(),
    }
    print(json.dumps(row))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
