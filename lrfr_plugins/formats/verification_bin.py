"""InsightFace verification ``.bin`` files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin`` ...), loaded safely.

A ``.bin`` is ``pickle.dump((bins, issame_list))`` (``PROTOCOLS.md`` §2.1): ``bins`` holds 2·P encoded images (JPEG or
PNG bytes), ``issame_list`` P bools, and pair i is ``(bins[2i], bins[2i+1])``. The public files were pickled by
Python 2 (protocol 2, ``str`` blobs), so they are loaded with ``encoding="bytes"``.

A pickle can import and call anything while it loads, and these files come from unsigned downloads, so they are
read with a restricted unpickler (§2.2). Genuine content needs no global at all. The only globals accepted are the
ones ordinary re-packs need, each replaced by a checking stand-in that cannot run code:

* ``_codecs.encode(str, "latin1")`` and ``builtins.bytes()`` -- how Python 3 writes ``bytes`` at protocol 2;
* ``builtins.bytearray`` -- how protocols 2-4 write a ``bytearray``;
* numpy array/scalar reconstruction (``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray
  ._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar``, ``numpy._core.numeric
  ._frombuffer``), for numeric dtypes only (object arrays are refused); only with ``allow_numpy=True`` (default).

Anything else raises :class:`~lrfr_plugins.errors.DataError` naming the file and the refused global.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import pickle
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import DataError
from .recordio import _atomic, decode_image

PathLike = str | os.PathLike

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG"


class _Refused(Exception):
    """A stand-in's argument check failed (turned into a DataError naming the file)."""


def _latin1_encode(obj: Any, encoding: Any = "utf-8", *rest: Any) -> bytes:
    if rest or not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode called with {type(obj).__name__}, {encoding!r}; only (str, 'latin1') is "
                       "accepted")
    return obj.encode("latin1")


def _bytes(*args: Any) -> bytes:
    if args:
        raise _Refused("builtins.bytes called with arguments; only bytes() is accepted")
    return b""


def _bytearray(*args: Any) -> bytearray:
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return bytearray(args[0].encode("latin1"))
    raise _Refused("builtins.bytearray called with unexpected arguments")


def _numpy_attr(*candidates: tuple[str, str]) -> Any:
    import importlib

    for mod, name in candidates:
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise _Refused(f"this numpy has none of {candidates}")  # pragma: no cover


def _check_dtype(d: np.dtype) -> np.dtype:
    if d.hasobject:
        raise _Refused(f"numpy dtype {d} holds Python objects; only numeric arrays are accepted")
    return d


def _np_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if isinstance(obj, bytes):
        obj = obj.decode("latin1")
    if not isinstance(obj, str):
        raise _Refused(f"numpy.dtype called with {type(obj).__name__}; only a type string is accepted")
    return _check_dtype(np.dtype(obj, bool(align), bool(copy)))


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise _Refused("numpy _reconstruct of a class other than numpy.ndarray")
    real = _numpy_attr(("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"))
    return real(np.ndarray, shape, dtype)


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype):
        raise _Refused("numpy _frombuffer without a numpy dtype")
    _check_dtype(dtype)
    real = _numpy_attr(("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"))
    return real(buf, dtype, shape, order)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype):
        raise _Refused("numpy scalar without a numpy dtype")
    _check_dtype(dtype)
    real = _numpy_attr(("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"))
    return real(dtype, data) if data is not None else real(dtype)


_BASIC: dict[tuple[str, str], Callable[..., Any]] = {
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _bytes,
    ("__builtin__", "bytes"): _bytes,
    ("builtins", "bytearray"): _bytearray,
    ("__builtin__", "bytearray"): _bytearray,
}
_NUMPY: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY[(_mod, "_reconstruct")] = _np_reconstruct
    _NUMPY[(_mod, "scalar")] = _np_scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _NUMPY[(_mod, "_frombuffer")] = _np_frombuffer
_NUMPY[("numpy", "ndarray")] = np.ndarray
_NUMPY[("numpy", "dtype")] = _np_dtype

#: Every (module, name) the unpickler accepts with ``allow_numpy=True``; everything else is refused.
ALLOWED_GLOBALS = frozenset(_BASIC) | frozenset(_NUMPY)


def _py3_name(module: str, name: str) -> str:
    """The Python 3 name of a Python 2 global (pickle's fix_imports mapping), for error messages."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh: io.BytesIO, path: pathlib.Path, allow_numpy: bool):
        super().__init__(fh, encoding="bytes")
        self._path = path
        self._allowed = {**_BASIC, **(_NUMPY if allow_numpy else {})}

    def find_class(self, module: str, name: str) -> Any:
        if isinstance(module, bytes):  # pragma: no cover - defensive
            module = module.decode("latin1")
        if isinstance(name, bytes):  # pragma: no cover
            name = name.decode("latin1")
        found = self._allowed.get((module, name))
        if found is not None:
            return found
        py3 = _py3_name(module, name)
        shown = f"'{module}.{name}'" + (f" (Python 3: '{py3}')" if py3 != f"{module}.{name}" else "")
        hint = ("" if (module, name) not in _NUMPY else
                " It is a numpy array reconstruction; pass allow_numpy=True if you trust numeric arrays.")
        raise DataError(f"{self._path}: the pickle asks to import the global {shown}; refused. lrfr will "
                        "not run code from a downloaded file. A genuine InsightFace .bin holds only bytes, lists "
                        "and bools and needs no global: re-download it from the official source, or re-pack "
                        f"trusted images with lrfr_plugins.formats.write_verification_bin.{hint}")


def safe_load_pickle(path: PathLike, data: bytes | None = None, allow_numpy: bool = True) -> Any:
    """Unpickle ``path`` (or ``data``, reported as ``path``) with the restricted unpickler, ``encoding="bytes"``."""
    path = pathlib.Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: file not found. Check the path to the verification .bin.") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path, allow_numpy).load()
    except DataError:
        raise
    except _Refused as exc:
        raise DataError(f"{path}: refused while unpickling: {exc}. lrfr will not run code from a downloaded file; "
                        "re-download the file from the official source.") from None
    except RecursionError:
        raise DataError(f"{path}: the pickle nests too deeply; it is not a verification .bin.") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); the file is truncated or "
                        f"corrupt ({len(data)} bytes). Re-download it.") from None


def _as_blob(item: Any) -> bytes | None:
    if isinstance(item, bytes):
        return item
    if isinstance(item, bytearray):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    return None


def _as_bool(item: Any) -> bool | None:
    if isinstance(item, (bool, np.bool_)):
        return bool(item)
    if isinstance(item, (int, np.integer)) and int(item) in (0, 1):
        return bool(item)
    return None


def _validate(obj: Any, where: str, check_signatures: bool) -> tuple[list[bytes], list[bool]]:
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        kind = f"a {len(obj)}-element {type(obj).__name__}" if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise DataError(f"{where}: holds {kind}; a verification .bin holds a 2-tuple (bins, issame_list).")
    raw_bins, raw_same = obj
    if not isinstance(raw_bins, (list, tuple)):
        raise DataError(f"{where}: bins is a {type(raw_bins).__name__}, expected a list of encoded images.")
    if not isinstance(raw_same, (list, tuple, np.ndarray)):
        raise DataError(f"{where}: issame_list is a {type(raw_same).__name__}, expected a list of bools.")
    bins: list[bytes] = []
    for i, item in enumerate(raw_bins):
        blob = _as_blob(item)
        if blob is None:
            raise DataError(f"{where}: bins[{i}] is a {type(item).__name__}, expected encoded image bytes.")
        if check_signatures and not blob.startswith((JPEG_SIGNATURE, PNG_SIGNATURE)):
            raise DataError(f"{where}: bins[{i}] starts with bytes {blob[:4].hex(' ') or '(empty)'}, which is "
                            "neither JPEG (ff d8 ff) nor PNG (89 50 4e 47). The file is corrupt or not a .bin; pass "
                            "check_signatures=False to load it anyway.")
        bins.append(blob)
    issame: list[bool] = []
    for i, item in enumerate(list(raw_same)):
        b = _as_bool(item)
        if b is None:
            raise DataError(f"{where}: issame_list[{i}] is {item!r} ({type(item).__name__}), expected a bool.")
        issame.append(b)
    if len(bins) != 2 * len(issame):
        raise DataError(f"{where}: {len(bins)} images for {len(issame)} pairs; a .bin holds exactly 2 images per "
                        "pair. The file is truncated or corrupt.")
    return bins, issame


@dataclasses.dataclass
class VerificationBin:
    """The content of a ``.bin``: ``bins[2i], bins[2i+1]`` form pair i, labelled ``issame[i]``."""

    bins: list[bytes]
    issame: list[bool]
    path: pathlib.Path | None = None

    def __len__(self) -> int:
        return len(self.issame)

    def pair(self, i: int) -> tuple[bytes, bytes, bool]:
        return self.bins[2 * i], self.bins[2 * i + 1], self.issame[i]

    def decode(self, j: int) -> np.ndarray:
        """Image ``j`` (0 ≤ j < 2·len) as uint8 HWC RGB, as arcface_torch's ``load_bin`` sees it."""
        return decode_image(self.bins[j], where=f"{self.path or '.bin'}: bins[{j}]")

    def decode_all(self) -> np.ndarray:
        """All images stacked as uint8 (2·P, H, W, 3) RGB; they must share one size."""
        imgs = [self.decode(j) for j in range(len(self.bins))]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise DataError(f"{self.path or '.bin'}: the images have different sizes {sorted(shapes)}; decode them "
                            "one by one with decode(j).")
        return np.stack(imgs) if imgs else np.zeros((0, 112, 112, 3), np.uint8)


def load_verification_bin(path: PathLike, *, allow_numpy: bool = True,
                          check_signatures: bool = True) -> VerificationBin:
    """Load and validate a verification ``.bin`` without running any code from it."""
    path = pathlib.Path(path)
    obj = safe_load_pickle(path, allow_numpy=allow_numpy)
    bins, issame = _validate(obj, str(path), check_signatures)
    return VerificationBin(bins, issame, path)


def write_verification_bin(path: PathLike, bins: Sequence[bytes] | Iterable[bytes], issame: Sequence[bool],
                           *, check_signatures: bool = True) -> None:
    """Write ``(bins, issame_list)`` with pickle protocol 4, atomically (temp file + rename).

    The file holds only ``bytes``, a ``list`` and ``bool`` values, so any InsightFace ``load_bin`` (and
    :func:`load_verification_bin`) reads it.
    """
    path = pathlib.Path(path)
    clean_bins, clean_same = _validate((list(bins), list(issame)), f"{path} (writing)", check_signatures)
    _atomic().atomic_write_bytes(path, pickle.dumps((clean_bins, clean_same), protocol=4))
