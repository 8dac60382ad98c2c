"""Procedural 112x112 face images with identity at several spatial frequencies.

Why this exists: low-resolution face recognition is about which identity cues survive
down-sampling. Real face data sets cannot ship with the package, so the toolkit renders
stand-in faces whose identity lives, like real faces, at three scales:

* coarse (survives 7x7): head width/height/jaw taper, skin tone, hair colour, hair
  volume/length, hairline height;
* mid (visible at 14-28 px): eye spacing/height/size/slant, iris colour, brow length/
  thickness/arch/tilt, nose length/width, ear size, mouth width/height/lip thickness;
* fine (gone below ~28 px): a fixed pattern of small moles and a thin scar line.

Every image also draws nuisances that are *not* identity: pose (in-plane rotation,
shift, scale, a yaw-like parallax of the inner features), expression (eye openness,
gaze, brow raise, mouth opening and smile), illumination (gain, colour cast, offset,
directional gradient), a random background with a clutter blob, and pixel noise.

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
_N_MOLES = 12
_N_SCAR = 8  # dots along the identity's scar line
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


def _ellipse(du, dv, rx, ry):
    """Coverage of an axis-aligned ellipse; the distance is approximated from r^2 - 1."""
    r2 = (du / rx) ** 2 + (dv / ry) ** 2
    return _soft((1.0 - r2) * (np.minimum(rx, ry) * 0.5))


def _blend(view, alpha, colour):
    """Paint colour over a planar (n, 3, h, w) canvas view with per-pixel coverage."""
    delta = colour - view
    delta *= alpha[:, None]
    view += delta


def _f32(params: dict) -> dict:
    return {k: v.astype(np.float32) for k, v in params.items()}


class SyntheticFaceGenerator:
    """Deterministic procedural faces: identity codes plus per-image nuisances.

    ``split`` selects a disjoint identity population ("train" or "test"): the split enters
    the identity hash, so identity 5 of "test" is a different person from identity 5 of
    "train". ``pose``, ``expression``, ``illumination`` and ``noise`` scale the per-image
    nuisance variation (0 = none, 1 = default); the background is always random so that it
    never carries identity.
    """

    def __init__(self, seed: int = 0, split: str = "train", *, pose: float = 1.0, expression: float = 1.0,
                 illumination: float = 1.0, noise: float = 1.0):
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(_SPLITS)}")
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
        p["head"] = np.stack([r.uniform(36.0, 44.0),    # half-width
                              r.uniform(48.0, 56.0),    # half-height
                              r.uniform(0.0, 0.9),      # jaw taper (narrower below the equator)
                              r.uniform(56.0, 64.0)], axis=1)  # centre v
        tone = r.uniform(0.0, 1.0)[:, None]
        p["skin"] = (np.array([0.36, 0.23, 0.16]) + tone * np.array([0.58, 0.56, 0.53])
                     + r.normal(0.025, 3))
        lightness = r.uniform(0.06, 0.8)[:, None]
        warmth = r.uniform(0.0, 1.0)[:, None]
        grey = (r.uniform(0.0, 1.0) < 0.15)[:, None] * r.uniform(0.5, 1.0)[:, None]
        hair = lightness * np.concatenate([np.ones((n, 1)), 0.85 - 0.25 * warmth, 0.65 - 0.4 * warmth], axis=1)
        p["hair_colour"] = hair + grey * (lightness + 0.15 - hair)
        p["hair"] = np.stack([r.uniform(0.0, 10.0),     # volume beyond the head outline
                              r.uniform(30.0, 125.0),   # length (lowest v of the back hair)
                              r.uniform(6.0, 30.0),     # hairline height at the centre
                              r.uniform(2.0, 25.0),     # temple recession
                              r.normal(3.0)], axis=1)   # parting tilt
        # Mid: eyes, brows, nose, ears, mouth.
        p["eyes"] = np.stack([r.uniform(15.0, 21.0),    # half spacing
                              r.uniform(47.0, 56.0),    # height
                              r.uniform(5.0, 8.0),      # half-width
                              r.uniform(2.2, 3.8),      # half-height
                              r.normal(0.08)], axis=1)  # slant
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
        p["nose"] = np.stack([r.uniform(66.0, 78.0),    # tip height
                              r.uniform(3.5, 7.0),      # nostril half spacing
                              r.uniform(1.1, 2.1)], axis=1)  # nostril size
        p["ears"] = r.uniform(0.7, 1.3)
        p["mouth"] = np.stack([r.uniform(86.0, 97.0),   # height
                               r.uniform(11.0, 18.0),   # half-width
                               r.uniform(1.3, 3.2),     # lip thickness
                               r.normal(0.8)], axis=1)  # resting curvature
        p["lip_colour"] = p["skin"] + r.uniform(0.15, 0.6)[:, None] * (np.array([0.72, 0.25, 0.28]) - p["skin"])
        # Fine: moles (u, v, radius, darkness) and a scar line (u, v, direction, length).
        p["moles"] = np.stack([r.uniform(-0.75, 0.75, _N_MOLES),   # u offset in head half-widths
                               r.uniform(-0.45, 0.75, _N_MOLES),   # v offset in head half-heights
                               r.uniform(0.8, 1.5, _N_MOLES),
                               r.uniform(0.35, 0.75, _N_MOLES)], axis=2)
        p["scar"] = np.stack([r.uniform(-0.6, 0.6), r.uniform(-0.4, 0.6),
                              r.uniform(-1.6, 1.6), r.uniform(8.0, 15.0), r.uniform(0.15, 0.35)], axis=1)
        return p

    def _sample_params(self, identities: np.ndarray, samples: np.ndarray) -> dict[str, np.ndarray]:
        r = _Draws(_hash(self.seed, _SPLITS[self.split], _STREAM_SAMPLE, identities, samples))
        pose, expr, ill = self.pose, self.expression, self.illumination
        s = {}
        s["pose"] = np.stack([np.clip(r.normal(0.10 * pose), -1.5, 1.5),   # rotation (rad)
                              1.0 + r.normal(0.06 * pose),                # scale
                              r.normal(3.0 * pose), r.normal(3.0 * pose),  # shift (px)
                              np.clip(r.normal(0.45 * pose), -1.0, 1.0),   # yaw
                              np.clip(r.normal(0.45 * pose), -1.0, 1.0)], axis=1)  # pitch
        blink = r.uniform(0.0, 1.0) < 0.06 * min(expr, 1.0)
        s["expression"] = np.stack([np.where(blink, 0.12, np.clip(1.0 + r.normal(0.15 * expr), 0.1, 1.4)),
                                    r.normal(1.0 * expr), r.normal(0.5 * expr),  # gaze
                                    r.normal(1.5 * expr),                        # brow raise
                                    5.0 * expr * np.clip(r.uniform(-1.5, 1.0), 0.0, 1.0) ** 2,  # mouth open
                                    r.normal(2.0 * expr)], axis=1)               # smile
        s["light"] = np.concatenate([1.0 + r.normal(0.25 * ill, 1), r.normal(0.25 * ill, 2),  # gain, gradient
                                     r.normal(0.09 * ill, 3), r.normal(0.05 * ill, 1),  # cast, offset
                                     np.clip(r.normal(0.3 * ill, 1), -0.9, 0.9)], axis=1)  # tone curve
        s["background"] = np.concatenate([r.uniform(0.1, 0.9, 1) + r.uniform(-0.25, 0.25, 3), r.uniform(-0.3, 0.3, 6),
                                          r.uniform(0.0, SIZE, 2), r.uniform(15.0, 50.0, 2),
                                          r.uniform(0.05, 0.95, 3)], axis=1)
        s["noise"] = np.stack([self.noise * r.uniform(0.01, 0.05),
                               np.floor(r.uniform(0.0, _NOISE_BANK - 3 * SIZE * SIZE))], axis=1)
        return s

    # ------------------------------------------------------------------ public API
    def identity_code(self, identity: int) -> dict[str, np.ndarray]:
        """The identity's parameters (canonical-frame pixels / RGB in [0, 1])."""
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
        p = _f32(self._identity_params(ids))
        s = self._sample_params(ids, smp)
        frame = _Frame(s["pose"])
        s32 = _f32(s)
        canvas = self._background(s32["background"])
        _paint_face(canvas, frame, p, s32["expression"], s32["pose"][:, 4], s32["pose"][:, 5])
        self._light_and_noise(canvas, s32["light"], s["noise"])
        canvas += 0.5  # round half up: the uint8 assignment below truncates
        np.clip(canvas, 0.0, 255.0, out=canvas)
        out[...] = canvas.transpose(0, 2, 3, 1)

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
        canvas += light[:, 7, None, None, None] * canvas * (1.0 - canvas)
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

        return span(y - hy, y + hy), span(x - hx, x + hx)

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
        _paint_eye(paint, _c(p["iris_colour"]), eu, eye_v + 1.5 * pitch, eye_w * squeeze, eye_h * openness,
                   eye_slant * side, gaze_u, gaze_v)
    _paint_nose(paint, skin, cu + 7.0 * yaw, eye_v + 1.5 * pitch, p["nose"][:, 0] + 6.0 * pitch, p["nose"])
    _paint_mouth(paint, _c(p["lip_colour"]), cu + 3.5 * yaw, p["mouth"][:, 0] + 3.5 * pitch, p["mouth"],
                 mouth_open, smile)


def _paint_marks(view, frame: _Frame, rows: slice, cols: slice, p: dict, visible) -> None:
    """Moles and a scar line as small radial stamps that darken visible skin only.

    Stamps are splatted into one darkness map with bincount; each pixel sums only its own
    image's stamps, in a fixed order, so the result does not depend on the chunk.
    """
    n, _, h, w = view.shape
    a, b, cv = p["head"][:, 0:1], p["head"][:, 1:2], p["head"][:, 3:4]
    moles, scar = p["moles"], p["scar"]
    t = np.linspace(-0.5, 0.5, _N_SCAR, dtype=np.float32)[None, :] * scar[:, 3:4] / np.sqrt(1.0 + scar[:, 2:3] ** 2)
    u = np.concatenate([_PIVOT_U + moles[:, :, 0] * a, _PIVOT_U + scar[:, 0:1] * a + t * scar[:, 2:3]], axis=1)
    v = np.concatenate([cv + moles[:, :, 1] * b, cv + scar[:, 1:2] * b + t], axis=1)
    radius = np.concatenate([moles[:, :, 2], np.full((n, _N_SCAR), 0.9, np.float32)], axis=1)
    dark = np.concatenate([moles[:, :, 3], np.repeat(scar[:, 4:5], _N_SCAR, axis=1)], axis=1)

    x, y = frame.to_image(u.astype(np.float64), v.astype(np.float64))
    radius = radius * frame.scale[:, None]
    off = np.arange(-_STAMP, _STAMP + 1)
    px = np.floor(x)[:, :, None] + off  # (n, k, f) absolute pixel columns
    py = np.floor(y)[:, :, None] + off
    r2 = ((px - x[:, :, None])[:, :, None, :] ** 2 + (py - y[:, :, None])[:, :, :, None] ** 2) \
        / radius[:, :, None, None] ** 2
    weight = dark[:, :, None, None] * np.clip(1.0 - r2, 0.0, 1.0) ** 2  # (n, k, f, f)
    col = (px - cols.start)[:, :, None, :]
    row = (py - rows.start)[:, :, :, None]
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (np.arange(n)[:, None, None, None] * h + row) * w + col
    darkness = np.bincount(np.broadcast_to(flat, weight.shape)[inside].astype(np.int64),
                           weights=weight[inside], minlength=n * h * w).reshape(n, h, w)
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


def _paint_eye(paint: _Painter, iris_colour, eu, ev, half_w, half_h, slant, gaze_u, gaze_v) -> None:
    """Lid outline, sclera, then iris and pupil clipped to the sclera."""
    r = paint.region(eu, ev, half_w + 2.0, half_h + 2.0 + np.abs(slant) * half_w)
    if r is None:
        return
    view, uu, vv, _, _ = r
    du = uu - _b(eu)
    dv = vv - _b(ev) - _b(slant) * du
    _blend(view, _ellipse(du, dv, _b(half_w + 1.2), _b(half_h + 1.2)), _DARK)
    sclera = _ellipse(du, dv, _b(half_w), _b(half_h))
    _blend(view, sclera, _WHITE)
    d2 = (du - _b(gaze_u)) ** 2 + (dv - _b(gaze_v)) ** 2
    iris_r = _b(0.42 * half_w + 0.6)
    _blend(view, _soft((iris_r * iris_r - d2) / (2.0 * iris_r)) * sclera, iris_colour)
    pupil_r = 0.45 * iris_r
    _blend(view, _soft((pupil_r * pupil_r - d2) / (2.0 * pupil_r)) * sclera, _PUPIL)


def _paint_nose(paint: _Painter, skin, nu, eye_v, tip, nose) -> None:
    """A shaded ridge from the eyes to the tip, a shadow under the tip, and two nostrils."""
    spread, size = nose[:, 1], nose[:, 2]
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
        for side in (-1.0, 1.0):
            _blend(view, _ellipse(du - side * _b(spread), dv, _b(1.3 * size), _b(0.8 * size)), _DARK)


def _paint_mouth(paint: _Painter, lip_colour, mu, mv, mouth, open_, smile) -> None:
    """Lips as a curved band that tapers to the corners, with a dark opening/line inside."""
    half_w, lip, curve = mouth[:, 1], mouth[:, 2], mouth[:, 3] + smile
    r = paint.region(mu, mv - 0.5 * curve, half_w + 1.0, 0.5 * np.abs(curve) + 0.5 * open_ + lip + 1.0)
    if r is None:
        return
    view, uu, vv, _, _ = r
    t = (uu - _b(mu)) / _b(half_w)
    taper = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
    offset = np.abs(vv - (_b(mv) - _b(curve) * t * t))
    ends = _soft((1.0 - np.abs(t)) * _b(half_w))
    _blend(view, _soft((_b(0.5 * open_ + lip)) * taper - offset) * ends, lip_colour)
    _blend(view, _soft(_b(0.5 * open_) * taper + 0.35 - offset) * ends, _MOUTH)
