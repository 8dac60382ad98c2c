"""Image bytes to RGB pixels and back, for every reader of face images: RecordIO packs, image folders, ``.bin``
files, LFW, SCface, QMUL-SurvFace, TinyFace and the synthetic captures.

Pixels are uint8 HWC **RGB**, what ``mx.image.imdecode`` and arcface_torch give. JPEGs take a fast path
(:func:`_decode_fast`, simplejpeg when installed) with the same pixels as Pillow's; everything else goes through
Pillow. Errors are :class:`~lrfr_plugins.errors.DataError` naming the image.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from ..errors import DataError


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with matplotlib
        raise DataError("decoding InsightFace images needs Pillow: pip install pillow") from None
    return Image


_SIMPLEJPEG: Any = None  # the module, False when it is not installed, None before the first look


def _simplejpeg():
    global _SIMPLEJPEG
    if _SIMPLEJPEG is None:
        try:
            import simplejpeg
        except ImportError:
            simplejpeg = False
        _SIMPLEJPEG = simplejpeg
    return _SIMPLEJPEG or None


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's baseline, extended or progressive frame header (SOF0-2); None for
    anything else: not a JPEG, lossless or arithmetic-coded frames, a header cut short."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack_from(">HH", data, i + 5)
            return (height, width, data[i + 9]) if height and width else None
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) or marker in (0x01, *range(0xD0, 0xDB)):
            return None  # another frame type, or a marker without a length (or a scan) before any frame header
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def _decode_fast(data: bytes, out: np.ndarray | None) -> np.ndarray | None:
    """RGB pixels of a JPEG without ``Image.open``/``load``'s per-image Python work, or None (then the open path
    decodes it or words why it cannot; also on any error here). Two routes, both with PIL's pixels (tested):

    * simplejpeg (the optional ``[fast]`` extra, libjpeg-turbo), for YCbCr and grey JPEGs, straight into ``out``:
      ~2x faster than the open path on 112 px faces. Its defaults (accurate integer IDCT, fancy upsampling) are PIL's.
    * else PIL's own JPEG decoder run on the bytes (``Image.frombuffer`` with the "jpeg" decoder and the arguments
      ``Image.open`` gives it for a 3-component frame, rawmode RGB): ~25% faster. Large frames (> 16 M pixels) are
      left to the open path, which applies PIL's decompression-bomb check.
    """
    frame = _jpeg_frame(data)
    if frame is None:
        return None
    height, width, components = frame
    fits = out is not None and out.shape == (height, width, 3) and out.flags.c_contiguous
    simplejpeg = _simplejpeg()
    try:
        if simplejpeg is not None:
            if simplejpeg.decode_jpeg_header(data)[2] not in ("YCbCr", "Gray"):  # CMYK / YCCK: PIL's conversion
                return None
            if not fits:
                return simplejpeg.decode_jpeg(data, colorspace="RGB")
            simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
            return out
        if components != 3 or height * width > 1 << 24:
            return None
        rgb = np.asarray(_pil().frombuffer("RGB", (width, height), data, "jpeg", "RGB", ""))
    except Exception:  # corrupt or truncated: the open path decides and words the error
        return None
    if fits:
        out[...] = rgb
        return out
    return rgb.copy()  # asarray of a PIL image is read-only; torch.from_numpy needs a writable array


def decode_image(data: bytes, where: str = "image", out: np.ndarray | None = None) -> np.ndarray:
    """Decode JPEG/PNG bytes to a uint8 HWC **RGB** array (what ``mx.image.imdecode`` and arcface_torch give).

    InsightFace encodes with cv2 from BGR, so the file itself is ordinary RGB JPEG; cv2.imdecode would hand back BGR.
    Greyscale or RGBA images are converted to RGB. ``out`` (uint8 HWC, e.g. one slot of a batch): when the image
    has its shape, the pixels are written there and ``out`` is returned (no extra array); otherwise a new array.
    Most JPEGs take :func:`_decode_fast` (simplejpeg when installed: ``pip install lrfr-plugins[fast]``), with the
    same pixels.
    """
    fast = _decode_fast(data, out)
    if fast is not None:
        return fast
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")  # convert() to the same mode would only copy
            if out is not None and out.shape == (rgb.height, rgb.width, 3):
                out[...] = np.asarray(rgb)
                return out
            arr = np.array(rgb, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    except Exception as exc:
        head = bytes(data[:4]).hex(" ")
        raise DataError(f"{where}: cannot decode the image ({len(data)} bytes starting {head or 'nothing'}): "
                        f"{type(exc).__name__}: {exc}. The record may not be an image or may be corrupt.") from None
    return arr


def encode_image(rgb: np.ndarray, quality: int = 95, fmt: str = ".jpg") -> bytes:
    """Encode a uint8 HWC RGB (or HW grey) array as JPEG (default, quality 95 like ``pack_img``) or PNG."""
    Image = _pil()
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    buf = io.BytesIO()
    fmt = fmt.lower().lstrip(".")
    if fmt in ("jpg", "jpeg"):
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    elif fmt == "png":
        Image.fromarray(arr).save(buf, format="PNG")
    else:
        raise ValueError(f"unsupported image format {fmt!r}; use '.jpg' or '.png'")
    return buf.getvalue()
