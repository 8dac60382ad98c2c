"""Procedural 112x112 face images with identity at several spatial frequencies.

Why this exists: low-resolution face recognition is about which identity cues survive
down-sampling. Real face data sets cannot ship with the package, so the toolkit renders
stand-in faces whose identity lives, like real faces, at three scales:

* coarse (survives 7x7): head width/height/jaw taper, skin tone, hair colour, hair
  volume/length/hairline. Their ranges are deliberately narrow next to the lighting
  variation, so that a 7x7 face is only weakly identifiable, as in real data;
* mid (visible at 14-28 px): eye spacing/height/size/slant, brow spacing/height/length/
  arch/tilt, nose length and width, ear size, mouth height/width/curvature;
* fine (gone below ~28 px): 0.5-3 px structures: lash-line thickness, lid crease, iris size
  and colour, brow thickness, nostril shape, lip thickness and cupid's bow, plus skin marks
  (a mole pattern, a freckle field of identity-specific density, nasolabial folds and an
  optional scar).

Every image also draws nuisances that are not identity: pose (in-plane rotation, shift,
scale, and yaw/pitch faked as depth-dependent parallax of the inner features), expression
(eye openness and blinks, gaze, brow raise, mouth opening, smile, and day-to-day hair
styling), illumination (a tone curve, gain, colour cast, offset, directional gradient), a
random background with a clutter blob, and pixel noise.

Everything random comes from a counter-based hash of (seed, split, identity[, sample],
draw index), not from a stateful RNG, so an image depends only on its own arguments and
never on the batch it is rendered in. Pixel maths uses only IEEE-exact operations
(+, -, *, /, sqrt, min/max) so results are bit-identical whatever the batch size.
"""

from __future__ import annotations

import numpy as np

SIZE = 112
_SPLITS = {"train": 0x7A11, "test": 0x7E57}

# Canonical frame: the aligned-crop template (eyes ~(38,52)/(74,52), nose ~(56,72),
# mouth corners ~(42,92)/(71,92)); pose rotates and scales about this pivot.
_PIVOT_U, _PIVOT_V = 56.0, 60.0

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_STREAM_IDENTITY = 0x1D
_STREAM_SAMPLE = 0x5A
_STREAM_NOISE = 0xB0
_NOISE_BANK = 1 << 20
_CHUNK = 32
_FULL_ROWS = 0.6  # windows wider than this fraction of the image are widened to whole rows
_N_MOLES = 6
_N_FRECKLES = 40
_LINE_DOTS = 14  # a thin line is drawn as a row of small dots
_STAMP = 3  # stamps cover a (2*_STAMP+1)^2 pixel footprint

_X = np.arange(SIZE, dtype=np.float32)


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a cheap, well-avalanched bijection on uint64 arrays."""
    h = h ^ (h >> np.uint64(30))
    h = h * _MUL1
    h = h ^ (h >> np.uint64(27))
    h = h * _MUL2
    return h ^ (h >> np.uint64(31))


def _hash(*keys) -> np.ndarray:
    """Hash integer keys (scalars or broadcastable arrays) into one uint64 per element."""
    arrays = [np.atleast_1d(np.asarray(k).astype(np.int64).astype(np.uint64)) for k in keys]
    h = np.zeros(np.broadcast_shapes(*(a.shape for a in arrays)), dtype=np.uint64)
    for a in arrays:
        h = _mix((h ^ a) + _GOLDEN)
    return h


class _Draws:
    """Independent uniform columns derived from one hash per row, handed out in order.

    Each call consumes fresh columns, so adding a draw at the end never changes earlier
    ones; rows (images or identities) are fully independent of each other.
    """

    def __init__(self, base: np.ndarray):
        self._base = base
        self._next = 0

    def _columns(self, k: int) -> np.ndarray:
        idx = np.arange(self._next + 1, self._next + k + 1, dtype=np.uint64)
        self._next += k
        h = _mix(self._base[:, None] + idx[None, :] * _GOLDEN)
        return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def uniform(self, lo, hi, k: int | None = None) -> np.ndarray:
        u = self._columns(k or 1)
        u = u if k else u[:, 0]
        return lo + (hi - lo) * u

    def normal(self, sigma, k: int | None = None) -> np.ndarray:
        """Irwin-Hall approximation (sum of 3 uniforms): unit variance, bounded to +-3 sigma.

        Bounded draws keep every primitive inside a computable window and need no log/cos.
        """
        u = self._columns(3 * (k or 1)).reshape(-1, k or 1, 3)
        z = 2.0 * u.sum(axis=2) - 3.0
        return sigma * (z if k else z[:, 0])


def _sin_cos(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Taylor sin/cos for |theta| <= pi/2 (error < 1e-9).

    numpy's vectorised sin/cos may differ in the last ulp between SIMD and scalar paths,
    which would make pixels depend on batch size; polynomials are exact-op only.
    """
    t2 = theta * theta
    s = theta * (1 - t2 / 6 * (1 - t2 / 20 * (1 - t2 / 42 * (1 - t2 / 72 * (1 - t2 / 110 * (1 - t2 / 156))))))
    c = 1 - t2 / 2 * (1 - t2 / 12 * (1 - t2 / 30 * (1 - t2 / 56 * (1 - t2 / 90 * (1 - t2 / 132 * (1 - t2 / 182))))))
    return s, c


_noise_bank_cache: list[np.ndarray] = []


def _noise_bank() -> np.ndarray:
    """A fixed bank of unit-variance noise; each image reads a window at its own offset.

    Reading a contiguous slice is far cheaper than hashing every pixel of every image, and
    the bank is the same for all seeds, so it is built once per process.
    """
    if not _noise_bank_cache:
        h = _mix(np.arange(_NOISE_BANK * 3, dtype=np.uint64) * _GOLDEN + np.uint64(_STREAM_NOISE))
        u = (h >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))
        _noise_bank_cache.append((2.0 * u.reshape(-1, 3).sum(axis=1) - 3.0).astype(np.float32))
    return _noise_bank_cache[0]


def _soft(signed_distance):
    """Anti-aliased coverage from a signed distance in pixels (positive = inside)."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _ellipse_distance(du, dv, rx, ry):
    """Signed distance (pixels, positive inside) to an axis-aligned ellipse, to first order.

    (1 - r^2) / |grad r^2| stays accurate along both axes even for very flat ellipses (a
    blinking eye), so coverage never reaches more than ~1 px past the outline and every
    primitive stays inside the window computed for it.
    """
    gu, gv = du / (rx * rx), dv / (ry * ry)
    return (1.0 - (du * gu + dv * gv)) / (2.0 * np.sqrt(gu * gu + gv * gv) + 1e-6)


def _ellipse(du, dv, rx, ry):
    """Anti-aliased coverage of an axis-aligned ellipse."""
    return _soft(_ellipse_distance(du, dv, rx, ry))


def _blend(view, alpha, colour):
    """Paint colour over a planar (n, 3, h, w) canvas view with per-pixel coverage."""
    delta = colour - view
    delta *= alpha[:, None]
    view += delta


def _f32(params: dict) -> dict:
    """Parameters are drawn in float64 (exact hashing maths) but painted in float32: half the
    memory traffic, and numpy would otherwise promote every float32 pixel array they touch."""
    return {k: v.astype(np.float32) for k, v in params.items()}


class SyntheticFaceGenerator:
    """Deterministic procedural faces: identity codes plus per-image nuisances.

    ``split`` selects a disjoint identity population ("train" or "test"): the split enters
    the identity hash, so identity 5 of "test" is a different person from identity 5 of
    "train". ``pose``, ``expression`` (which includes hair styling), ``illumination`` and
    ``noise`` scale the per-image nuisance variation (0 = none, 1 = default); the
    background is always random so that it never carries identity.

    Rendering is single-threaded numpy (about 1.3k images/s on one core); since every image
    is a pure function of its arguments, data-loader workers can split any batch freely.
    """

    def __init__(self, seed: int = 0, split: str = "train", *, pose: float = 1.0, expression: float = 1.0,
                 illumination: float = 1.0, noise: float = 1.0):
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(_SPLITS)}")
        for name, value in (("pose", pose), ("expression", expression), ("illumination", illumination),
                            ("noise", noise)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.seed = int(seed)
        self.split = split
        self.pose = float(pose)
        self.expression = float(expression)
        self.illumination = float(illumination)
        self.noise = float(noise)

    # ------------------------------------------------------------------ parameters
    def _identity_params(self, identities: np.ndarray) -> dict[str, np.ndarray]:
        r = _Draws(_hash(self.seed, _SPLITS[self.split], _STREAM_IDENTITY, identities))
        n = len(identities)
        p = {}
        # Coarse: head outline, skin, hair.
        p["head"] = np.stack([r.uniform(38.0, 42.0),    # half-width
                              r.uniform(50.0, 54.0),    # half-height
                              r.uniform(0.2, 0.6),      # jaw taper (narrower below the equator)
                              r.uniform(57.0, 63.0)], axis=1)  # centre v
        tone = r.uniform(0.0, 1.0)[:, None]
        p["skin"] = (np.array([0.50, 0.35, 0.26]) + tone * np.array([0.22, 0.21, 0.20])
                     + r.normal(0.012, 3))
        lightness = r.uniform(0.1, 0.6)[:, None]
        warmth = r.uniform(0.0, 1.0)[:, None]
        grey = (r.uniform(0.0, 1.0) < 0.1)[:, None] * r.uniform(0.5, 1.0)[:, None]
        hair = lightness * np.concatenate([np.ones((n, 1)), 0.85 - 0.25 * warmth, 0.65 - 0.4 * warmth], axis=1)
        p["hair_colour"] = hair + grey * (lightness + 0.15 - hair)
        p["hair"] = np.stack([r.uniform(0.0, 5.0),      # volume beyond the head outline
                              r.uniform(55.0, 95.0),    # length (lowest v of the back hair)
                              r.uniform(13.0, 23.0),    # hairline height at the centre
                              r.uniform(3.0, 15.0),     # temple recession
                              r.normal(3.0)], axis=1)   # parting tilt
        # Mid: eyes, brows, nose, ears, mouth.
        p["eyes"] = np.stack([r.uniform(15.5, 20.5),    # half spacing
                              r.uniform(48.0, 56.0),    # height
                              r.uniform(5.0, 8.0),      # half-width
                              r.uniform(2.2, 3.8),      # half-height
                              r.normal(0.08),           # slant
                              # fine detail of the eye region, 0.5-2 px structures:
                              r.uniform(0.5, 2.0),      # lash-line thickness
                              r.uniform(1.5, 4.5),      # gap from lid to crease
                              np.where(r.uniform(0.0, 1.0) < 0.3, 0.0, r.uniform(0.25, 0.6)),  # crease depth
                              r.uniform(0.34, 0.5)], axis=1)  # iris radius / eye half-width
        p["iris_colour"] = np.where(r.uniform(0.0, 1.0)[:, None] < 0.6,  # brown, else blue/green/grey
                                    np.array([0.30, 0.18, 0.10]) * r.uniform(0.5, 1.3)[:, None],
                                    np.array([0.32, 0.45, 0.50]) + r.uniform(-0.12, 0.12, 3))
        p["brows"] = np.stack([r.uniform(-1.0, 3.0),    # extra spacing vs the eyes
                               r.uniform(6.0, 11.0),    # height above the eyes
                               r.uniform(6.5, 11.0),    # half-length
                               r.uniform(1.2, 3.4),     # thickness
                               r.uniform(-0.5, 3.0),    # arch
                               r.normal(0.12)], axis=1)  # tilt
        p["brow_colour"] = p["hair_colour"] * r.uniform(0.5, 0.9)[:, None]
        p["nose"] = np.stack([r.uniform(67.0, 77.0),    # tip height
                              r.uniform(3.5, 7.0),      # nostril half spacing
                              r.uniform(1.1, 2.1),      # nostril size
                              r.uniform(0.45, 0.9)], axis=1)  # nostril height / width
        p["ears"] = r.uniform(0.7, 1.3)
        p["mouth"] = np.stack([r.uniform(87.0, 96.0),   # height
                               r.uniform(11.0, 17.0),   # half-width
                               r.uniform(1.3, 3.2),     # upper-lip thickness
                               r.normal(0.8),           # resting curvature
                               r.uniform(0.8, 1.6),     # lower / upper lip thickness
                               r.uniform(0.0, 1.2)], axis=1)  # cupid's-bow notch depth
        p["lip_colour"] = p["skin"] + r.uniform(0.15, 0.6)[:, None] * (np.array([0.72, 0.25, 0.28]) - p["skin"])
        p["marks"] = self._marks(r, p)
        return p

    @staticmethod
    def _marks(r: _Draws, p: dict) -> np.ndarray:
        """Fine cues as small dark stamps (u, v, radius, darkness) in canonical coordinates.

        Besides a sparse mole pattern they include texture-like cues (freckle density, fold
        depth) because a CNN picks up such local statistics far more readily than the exact
        layout of a few dots; all of them are 1-3 px wide, so they alias away below ~28 px.
        """
        a, b, cv = p["head"][:, 0:1], p["head"][:, 1:2], p["head"][:, 3:4]
        eye_v, tip, spread = p["eyes"][:, 1:2], p["nose"][:, 0:1], p["nose"][:, 1:2]
        moles = [_PIVOT_U + r.uniform(-0.75, 0.75, _N_MOLES) * a, cv + r.uniform(-0.45, 0.75, _N_MOLES) * b,
                 r.uniform(1.0, 1.6, _N_MOLES), r.uniform(0.4, 0.8, _N_MOLES)]
        density, contrast = r.uniform(0.0, 1.0) ** 2, r.uniform(0.2, 0.45)
        freckles = [_PIVOT_U + r.uniform(-24.0, 24.0, _N_FRECKLES),
                    eye_v + 5.0 + r.uniform(0.0, 1.0, _N_FRECKLES) * (tip - eye_v + 2.0),
                    r.uniform(0.55, 0.9, _N_FRECKLES),
                    contrast[:, None] * (r.uniform(0.0, 1.0, _N_FRECKLES) < density[:, None])]
        # Lines as (start u, start v, end u, end v, darkness): two folds from beside the nose to
        # beyond the mouth corners, and a scar that half of the identities have.
        fold = r.uniform(0.0, 0.4)
        scar_u, scar_v = _PIVOT_U + r.uniform(-0.6, 0.6) * a[:, 0], cv[:, 0] + r.uniform(-0.4, 0.6) * b[:, 0]
        scar_du, scar_dv = r.uniform(-7.0, 7.0), r.uniform(-7.0, 7.0)
        scar = r.uniform(0.2, 0.4) * (r.uniform(0.0, 1.0) < 0.5)
        nose_u, fold_v0 = spread[:, 0] + 4.0, tip[:, 0] + 1.0
        mouth_u, fold_v1 = p["mouth"][:, 1] + 3.0, p["mouth"][:, 0] + 3.0
        lines = np.stack([
            np.stack([_PIVOT_U - nose_u, fold_v0, _PIVOT_U - mouth_u, fold_v1, fold], axis=1),
            np.stack([_PIVOT_U + nose_u, fold_v0, _PIVOT_U + mouth_u, fold_v1, fold], axis=1),
            np.stack([scar_u - scar_du, scar_v - scar_dv, scar_u + scar_du, scar_v + scar_dv, scar], axis=1)],
            axis=1)  # (n, 3, 5)
        t = np.linspace(0.0, 1.0, _LINE_DOTS)
        start, end = lines[:, :, None, 0:2], lines[:, :, None, 2:4]
        dots = (start + t[:, None] * (end - start)).reshape(len(a), -1, 2)
        dots = np.concatenate([dots, np.full(dots.shape[:2] + (1,), 0.8),
                               np.repeat(lines[:, :, 4], _LINE_DOTS, axis=1)[:, :, None]], axis=2)
        return np.concatenate([np.stack(moles, axis=2), np.stack(freckles, axis=2), dots], axis=1)

    def _sample_params(self, identities: np.ndarray, samples: np.ndarray) -> dict[str, np.ndarray]:
        r = _Draws(_hash(self.seed, _SPLITS[self.split], _STREAM_SAMPLE, identities, samples))
        pose, expr, ill = self.pose, self.expression, self.illumination
        s = {}
        s["pose"] = np.stack([np.clip(r.normal(0.07 * pose), -1.5, 1.5),   # rotation (rad)
                              1.0 + r.normal(0.05 * pose),                # scale
                              r.normal(2.5 * pose), r.normal(2.5 * pose),  # shift (px)
                              np.clip(r.normal(0.45 * pose), -1.0, 1.0),   # yaw
                              np.clip(r.normal(0.45 * pose), -1.0, 1.0)], axis=1)  # pitch
        blink = r.uniform(0.0, 1.0) < 0.06 * min(expr, 1.0)
        s["expression"] = np.stack([np.where(blink, 0.12, np.clip(1.0 + r.normal(0.15 * expr), 0.1, 1.4)),
                                    r.normal(1.0 * expr), r.normal(0.5 * expr),  # gaze
                                    r.normal(1.5 * expr),                        # brow raise
                                    5.0 * expr * np.clip(r.uniform(-1.5, 1.0), 0.0, 1.0) ** 2,  # mouth open
                                    r.normal(2.0 * expr)], axis=1)               # smile
        # Hair is styled differently from day to day: jitter its volume, length, hairline,
        # recession and parting (same order as the identity's "hair" code).
        s["hair"] = np.stack([r.normal(2.0 * expr), r.normal(9.0 * expr), r.normal(3.0 * expr),
                              r.normal(3.0 * expr), r.normal(2.0 * expr)], axis=1)
        s["light"] = np.concatenate([1.0 + r.normal(0.3 * ill, 1), r.normal(0.3 * ill, 2),  # gain, gradient
                                     r.normal(0.12 * ill, 3), r.normal(0.05 * ill, 1),  # cast, offset
                                     np.clip(r.normal(0.4 * ill, 1), -0.9, 0.9)], axis=1)  # tone curve
        s["background"] = np.concatenate([r.uniform(0.1, 0.9, 1) + r.uniform(-0.25, 0.25, 3), r.uniform(-0.3, 0.3, 6),
                                          r.uniform(0.0, SIZE, 2), r.uniform(15.0, 50.0, 2),
                                          r.uniform(0.05, 0.95, 3)], axis=1)
        s["noise"] = np.stack([self.noise * r.uniform(0.005, 0.035),
                               np.floor(r.uniform(0.0, _NOISE_BANK - 3 * SIZE * SIZE))], axis=1)
        return s

    # ------------------------------------------------------------------ public API
    def identity_code(self, identity: int) -> dict[str, np.ndarray]:
        """The identity's parameters: lengths in canonical-frame pixels, colours RGB in [0, 1].

        ``marks`` holds one (u, v, radius, darkness) row per skin-mark stamp. Rendered images
        additionally jitter ``hair`` per sample (styling).
        """
        params = self._identity_params(np.array([int(identity)]))
        return {k: v[0] for k, v in params.items()}

    def render(self, identities: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """Render image k of identity ``identities[k]``, variation ``samples[k]``.

        Returns uint8 (N, 112, 112, 3) RGB. Images are rendered in fixed-size chunks only
        to keep the working set in cache; the result does not depend on the chunking.
        """
        identities = np.asarray(identities)
        samples = np.asarray(samples)
        if identities.ndim != 1 or identities.shape != samples.shape:
            raise ValueError("identities and samples must be 1-D arrays of the same length")
        if identities.size and not (np.issubdtype(identities.dtype, np.integer)
                                    and np.issubdtype(samples.dtype, np.integer)):
            raise TypeError("identities and samples must be integer arrays")
        out = np.empty((len(identities), SIZE, SIZE, 3), dtype=np.uint8)
        for start in range(0, len(identities), _CHUNK):
            ids = identities[start:start + _CHUNK].astype(np.int64)
            smp = samples[start:start + _CHUNK].astype(np.int64)
            self._render_chunk(ids, smp, out[start:start + _CHUNK])
        return out

    # ------------------------------------------------------------------ rendering
    def _render_chunk(self, ids: np.ndarray, smp: np.ndarray, out: np.ndarray) -> None:
        p = self._identity_params(ids)
        s = self._sample_params(ids, smp)
        p["hair"] = p["hair"] + s["hair"]
        p = _f32(p)
        frame = _Frame(s["pose"])
        s32 = _f32(s)
        canvas = self._background(s32["background"])
        _paint_face(canvas, frame, p, s32["expression"], s32["pose"][:, 4], s32["pose"][:, 5])
        self._light_and_noise(canvas, s32["light"], s["noise"])
        canvas += 0.5  # round half up: the uint8 cast below truncates
        np.clip(canvas, 0.0, 255.0, out=canvas)
        planes = canvas.astype(np.uint8)
        for c in range(3):  # interleaving plane by plane is ~5x faster than one transposed copy
            out[..., c] = planes[:, c]

    @staticmethod
    def _background(b: np.ndarray) -> np.ndarray:
        """Random colour, gradient and one clutter blob, in image coordinates."""
        rel = (_X - 56.0) / 56.0
        canvas = (b[:, 0:3, None, None] + b[:, 3:6, None, None] * rel[None, None, None, :]
                  + b[:, 6:9, None, None] * rel[None, None, :, None])
        dx = ((_X[None, :] - b[:, 9:10]) / b[:, 11:12]) ** 2
        dy = ((_X[None, :] - b[:, 10:11]) / b[:, 12:13]) ** 2
        blob = _soft((1.0 - (dx[:, None, :] + dy[:, :, None])) * 8.0)
        _blend(canvas, blob, b[:, 13:16, None, None])
        return canvas

    @staticmethod
    def _light_and_noise(canvas: np.ndarray, light: np.ndarray, noise: np.ndarray) -> None:
        """Illumination (tone curve, gain, directional gradient, colour cast, offset), then noise.

        The tone curve x + k x (1 - x) changes contrast between dark and bright regions, so
        ratios such as hair/skin brightness are not illumination invariants.
        """
        np.clip(canvas, 0.0, 1.0, out=canvas)
        k = light[:, 7, None, None, None]
        canvas *= (1.0 + k) - k * canvas
        rel = (_X - 56.0) / 56.0
        shade = light[:, 0, None, None] + light[:, 1, None, None] * rel[None, None, :] \
            + light[:, 2, None, None] * rel[None, :, None]
        gain = (255.0 * (1.0 + light[:, 3:6]))[:, :, None, None]
        canvas *= shade[:, None] * gain
        canvas += 255.0 * light[:, 6, None, None, None]
        bank = _noise_bank()
        size = 3 * SIZE * SIZE
        for k, (sigma, offset) in enumerate(noise):
            canvas[k] += np.float32(255.0 * sigma) * bank[int(offset):int(offset) + size].reshape(3, SIZE, SIZE)


class _Frame:
    """Per-image similarity pose mapping canonical face coordinates (u, v) to pixels."""

    def __init__(self, pose: np.ndarray):
        self.sin, self.cos = _sin_cos(pose[:, 0])
        self.scale = pose[:, 1]
        self.cx = _PIVOT_U + pose[:, 2]
        self.cy = _PIVOT_V + pose[:, 3]

    def to_image(self, u, v):
        """Pixel (x, y) of canonical (u, v); arrays broadcast against the chunk axis 0."""
        shape = (-1,) + (1,) * (np.ndim(u) - 1)
        c, s, k = (a.reshape(shape) for a in (self.cos, self.sin, self.scale))
        du, dv = u - _PIVOT_U, v - _PIVOT_V
        return (self.cx.reshape(shape) + k * (c * du - s * dv),
                self.cy.reshape(shape) + k * (s * du + c * dv))

    def window(self, u, v, eu, ev) -> tuple[slice, slice]:
        """Rows/cols covering, for every image of the chunk, the canonical box (u +- eu, v +- ev).

        The union over the chunk only bounds where work is done: outside a primitive its
        coverage is exactly 0, so the pixels do not depend on which images share a chunk.
        """
        x, y = self.to_image(np.asarray(u, np.float64), np.asarray(v, np.float64))
        ac, as_ = np.abs(self.cos), np.abs(self.sin)
        hx = self.scale * (ac * eu + as_ * ev) + 2.0
        hy = self.scale * (as_ * eu + ac * ev) + 2.0

        def span(lo, hi):
            return slice(int(np.clip(np.floor(lo.min()), 0, SIZE)), int(np.clip(np.ceil(hi.max()) + 1, 0, SIZE)))

        cols = span(x - hx, x + hx)
        if cols.stop - cols.start > _FULL_ROWS * SIZE:
            cols = slice(0, SIZE)  # whole rows are contiguous, and numpy runs ~2x faster on them
        return span(y - hy, y + hy), cols

    def coords(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Canonical (u, v) of the pixels in a window, float32 arrays of shape (n, h, w)."""
        ys = _X[rows][None, :, None] - self.cy.astype(np.float32)[:, None, None]
        xs = _X[cols][None, None, :] - self.cx.astype(np.float32)[:, None, None]
        c = (self.cos / self.scale).astype(np.float32)[:, None, None]
        s = (self.sin / self.scale).astype(np.float32)[:, None, None]
        return _PIVOT_U + (c * xs + s * ys), _PIVOT_V + (c * ys - s * xs)


class _Painter:
    """Paints primitives into windows of one chunk's planar (n, 3, H, W) canvas."""

    def __init__(self, canvas: np.ndarray, frame: _Frame):
        self.canvas = canvas
        self.frame = frame

    def region(self, u, v, eu, ev):
        """(canvas view, u, v, rows, cols) for a canonical box, or None if it is off-image."""
        rows, cols = self.frame.window(u, v, eu, ev)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return None
        uu, vv = self.frame.coords(rows, cols)
        return self.canvas[:, :, rows, cols], uu, vv, rows, cols


def _b(x):
    """Per-image scalar (n,) -> broadcastable against (n, h, w)."""
    return x[:, None, None]


def _c(rgb):
    """Per-image colour (n, 3) -> broadcastable against a planar (n, 3, h, w) view."""
    return rgb[:, :, None, None]


_DARK = np.array([0.12, 0.08, 0.07], np.float32)[None, :, None, None]
_WHITE = np.array([0.93, 0.92, 0.90], np.float32)[None, :, None, None]
_PUPIL = np.array([0.03, 0.03, 0.03], np.float32)[None, :, None, None]
_MOUTH = np.array([0.22, 0.06, 0.06], np.float32)[None, :, None, None]
_MOLE_TINT = np.array([0.75, 0.85, 0.95], np.float32)[None, :, None, None]


def _paint_face(canvas, frame: _Frame, p: dict, e: np.ndarray, yaw: np.ndarray, pitch: np.ndarray) -> None:
    """Draw ears, back hair, head with fringe, marks, then inner features, back to front.

    Out-of-plane pose is faked by parallax: features move with yaw (sideways) and pitch
    (up/down) in proportion to an assumed depth, which perturbs the mid-frequency geometry
    (eye-brow-nose-mouth distances) the way head rotation does in real photos.
    """
    paint = _Painter(canvas, frame)
    a, b, taper, cv = (p["head"][:, i] for i in range(4))
    cu = np.full_like(a, _PIVOT_U)
    eye_d, eye_v, eye_w, eye_h, eye_slant = (p["eyes"][:, i] for i in range(5))
    skin, hair = _c(p["skin"]), _c(p["hair_colour"])

    for side in (-1.0, 1.0):  # ears, behind the head at the sides
        r = paint.region(cu + side * (a - 2.0), eye_v + 12.0, 5.0 * p["ears"], 10.0 * p["ears"])
        if r:
            view, uu, vv, _, _ = r
            _blend(view, _ellipse(uu - _b(cu + side * (a - 2.0)), vv - _b(eye_v + 12.0),
                                  _b(4.5 * p["ears"]), _b(9.5 * p["ears"])), skin * 0.85)

    vol, length, line0, recess, part = (p["hair"][:, i] for i in range(5))
    r = paint.region(cu, cv - 4.0, a + vol, b + vol)  # back hair: enlarged head cut at the hair length
    if r:
        view, uu, vv, _, _ = r
        back = _ellipse(uu - _b(cu), vv - _b(cv - 4.0), _b(a + vol), _b(b + vol)) * _soft(_b(length) - vv)
        _blend(view, back, hair)

    r = paint.region(cu, cv, a, b)
    if r:  # head with jaw taper, the fringe above an identity-specific hairline, then marks
        view, uu, vv, rows, cols = r
        du, dv = (uu - _b(cu)) / _b(a), (vv - _b(cv)) / _b(b)
        r2 = du * du * (1.0 + _b(taper) * np.maximum(dv, 0.0)) + dv * dv
        head = _soft((1.0 - r2) * _b(np.minimum(a, b) * 0.5))
        fringe = (_soft(_b(line0 - 3.0 * pitch) + _b(recess) * du * du + _b(part) * du - vv)
                  * np.clip((1.15 - r2) * 8.0, 0.0, 1.0))
        shaded = skin * (1.0 - 0.18 * r2)[:, None]  # darker towards the outline: some 3-D look
        _blend(view, head, shaded + fringe[:, None] * (hair - shaded))
        _paint_marks(view, frame, rows, cols, p, head * (1.0 - fringe))

    openness, gaze_u, gaze_v, brow_raise, mouth_open, smile = (e[:, i] for i in range(6))
    b_space, b_height, b_len, b_thick, b_arch, b_tilt = (p["brows"][:, i] for i in range(6))
    for side in (-1.0, 1.0):
        # Inner features shift sideways with yaw in proportion to their depth (parallax), and
        # the eye turning away looks narrower.
        squeeze = 1.0 - 0.25 * np.maximum(side * yaw, 0.0)
        eu = cu + side * eye_d + 3.5 * yaw
        _paint_brow(paint, _c(p["brow_colour"]), eu + side * b_space - 0.5 * yaw,
                    eye_v - b_height - brow_raise + 3.5 * pitch, b_len * squeeze, b_thick, b_arch, b_tilt * side)
        _paint_eye(paint, _c(p["iris_colour"]), p["eyes"][:, 5:], eu, eye_v + 1.5 * pitch, eye_w * squeeze,
                   eye_h, openness, eye_slant * side, gaze_u, gaze_v)
    _paint_nose(paint, skin, cu + 7.0 * yaw, eye_v + 1.5 * pitch, p["nose"][:, 0] + 6.0 * pitch, p["nose"])
    _paint_mouth(paint, _c(p["lip_colour"]), cu + 3.5 * yaw, p["mouth"][:, 0] + 3.5 * pitch, p["mouth"],
                 mouth_open, smile)


def _paint_marks(view, frame: _Frame, rows: slice, cols: slice, p: dict, visible) -> None:
    """Fine marks as small radial stamps that darken visible skin only.

    Stamps are splatted into one darkness map with bincount; each pixel sums only its own
    image's stamps, in a fixed order, so the result does not depend on the chunk.
    """
    n, _, h, w = view.shape
    marks = p["marks"].astype(np.float64)
    x, y = frame.to_image(marks[:, :, 0], marks[:, :, 1])
    img, k = np.nonzero(marks[:, :, 3] > 0)  # only stamps that show, image-major order
    x, y, dark = x[img, k], y[img, k], marks[img, k, 3]
    radius = marks[img, k, 2] * frame.scale[img]
    off = np.arange(-_STAMP, _STAMP + 1)
    px = np.floor(x)[:, None] + off  # (m, f) absolute pixel columns / rows
    py = np.floor(y)[:, None] + off
    r2 = ((px - x[:, None])[:, None, :] ** 2 + (py - y[:, None])[:, :, None] ** 2) / radius[:, None, None] ** 2
    weight = dark[:, None, None] * np.clip(1.0 - r2, 0.0, 1.0) ** 2  # (m, f, f)
    col = (px - cols.start).astype(np.int64)[:, None, :]
    row = (py - rows.start).astype(np.int64)[:, :, None]
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = np.where(inside, (img[:, None, None] * h + row) * w + col, n * h * w)  # outside: a spare bin
    darkness = np.bincount(flat.ravel(), weights=weight.ravel(), minlength=n * h * w + 1)[:-1].reshape(n, h, w)
    view *= 1.0 - (np.minimum(darkness, 0.9).astype(np.float32) * visible)[:, None] * _MOLE_TINT


def _paint_brow(paint: _Painter, colour, bu, bv, half_len, thick, arch, tilt) -> None:
    """An arched, tilted band that thins towards its ends."""
    r = paint.region(bu, bv - 0.5 * arch, half_len + 1.0, 0.5 * np.abs(arch) + np.abs(tilt) * half_len + thick)
    if r is None:
        return
    view, uu, vv, _, _ = r
    t = (uu - _b(bu)) / _b(half_len)
    centre = _b(bv) - _b(arch) * (1.0 - t * t) - _b(tilt * half_len) * t
    half = _b(0.5 * thick) * (1.0 - 0.4 * t * t)
    _blend(view, _soft(half - np.abs(vv - centre)) * _soft((1.0 - np.abs(t)) * _b(half_len)), colour)


def _paint_eye(paint: _Painter, iris_colour, detail, eu, ev, half_w, full_h, openness, slant, gaze_u,
               gaze_v) -> None:
    """Lid crease, lash line, sclera, then iris and pupil clipped to the sclera.

    The crease sits on the lid skin, so it keeps the open eye's shape while the eye blinks.
    """
    lash, gap, crease, iris_ratio = (detail[:, i] for i in range(4))
    half_h = full_h * openness
    r = paint.region(eu, ev, half_w + lash + gap + 2.0,
                     np.maximum(full_h, half_h) + lash + gap + 2.0 + np.abs(slant) * half_w)
    if r is None:
        return
    view, uu, vv, _, _ = r
    du = uu - _b(eu)
    dv = vv - _b(ev) - _b(slant) * du
    crease_arc = _ellipse_distance(du, dv, _b(half_w + lash + gap), _b(full_h + lash + gap))
    crease_cover = _b(crease) * _soft(0.6 - np.abs(crease_arc)) * _soft(-dv)
    lash_cover = _ellipse(du, dv, _b(half_w + lash), _b(half_h + lash))
    _blend(view, 1.0 - (1.0 - crease_cover) * (1.0 - lash_cover), _DARK)  # two dark layers in one pass
    sclera = _ellipse(du, dv, _b(half_w), _b(half_h))
    _blend(view, sclera, _WHITE)
    d2 = (du - _b(gaze_u)) ** 2 + (dv - _b(gaze_v)) ** 2
    iris_r = _b(iris_ratio * half_w + 0.6)
    _blend(view, _soft((iris_r * iris_r - d2) / (2.0 * iris_r)) * sclera, iris_colour)
    pupil_r = 0.45 * iris_r
    _blend(view, _soft((pupil_r * pupil_r - d2) / (2.0 * pupil_r)) * sclera, _PUPIL)


def _paint_nose(paint: _Painter, skin, nu, eye_v, tip, nose) -> None:
    """A shaded ridge from the eyes to the tip, a shadow under the tip, and two nostrils."""
    spread, size, aspect = nose[:, 1], nose[:, 2], nose[:, 3]
    top = eye_v + 4.0
    r = paint.region(nu + 0.45 * spread, 0.5 * (top + tip), 2.0, 0.5 * (tip - top) + 1.0)
    if r:
        view, uu, vv, _, _ = r
        ridge = _soft(0.9 - np.abs(uu - _b(nu + 0.45 * spread))) * _soft(_b(tip - 1.0) - vv) * _soft(vv - _b(top))
        _blend(view, 0.5 * ridge, skin * 0.7)
    r = paint.region(nu, tip + 1.0, spread + 2.0 + 1.3 * size, 2.5)
    if r:
        view, uu, vv, _, _ = r
        du, dv = uu - _b(nu), vv - _b(tip + 1.0)
        _blend(view, 0.5 * _ellipse(du, dv + 0.5, _b(spread + 1.5), 1.4), skin * 0.75)
        rx, ry = _b(1.3 * size), _b(1.3 * aspect * size)
        nostrils = np.maximum(_ellipse(du - _b(spread), dv, rx, ry), _ellipse(du + _b(spread), dv, rx, ry))
        _blend(view, nostrils, _DARK)


def _paint_mouth(paint: _Painter, lip_colour, mu, mv, mouth, open_, smile) -> None:
    """Lips as a curved band that tapers to the corners, with a dark opening/line inside.

    The upper lip has a notch at the centre (cupid's bow); the lower lip its own thickness.
    """
    half_w, lip, curve, lower, bow = mouth[:, 1], mouth[:, 2], mouth[:, 3] + smile, mouth[:, 4], mouth[:, 5]
    r = paint.region(mu, mv - 0.5 * curve, half_w + 1.0,
                     0.5 * np.abs(curve) + 0.5 * open_ + lip * np.maximum(lower, 1.0) + 1.0)
    if r is None:
        return
    view, uu, vv, _, _ = r
    t = (uu - _b(mu)) / _b(half_w)
    taper = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
    offset = vv - (_b(mv) - _b(curve) * t * t)
    upper = _b(lip) - _b(bow) * np.maximum(1.0 - 6.0 * np.abs(t), 0.0)
    thickness = np.where(offset < 0.0, upper, _b(lip * lower))
    ends = _soft((1.0 - np.abs(t)) * _b(half_w))
    _blend(view, _soft((_b(0.5 * open_) + thickness) * taper - np.abs(offset)) * ends, lip_colour)
    _blend(view, _soft(_b(0.5 * open_) * taper + 0.35 - np.abs(offset)) * ends, _MOUTH)
