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
  ._frombuffer``), for bool and integer dtypes only (what uint8 image blobs and bool labels need; object arrays are
  refused); only with ``allow_numpy=True`` (default). ``numpy.ndarray`` is a token that only ``_reconstruct`` takes:
  calling it would allocate any shape the file names.

Anything else raises :class:`~lrfr_plugins.errors.DataError` naming the file and the refused global.

A pickle can also make the unpickler *allocate* far more than the file holds, so the sizes are bounded by the file's
length (issue 14): before unpickling, a scan of the opcodes (:func:`_prescan`) refuses memo indices beyond the opcodes
read so far and lengths beyond the bytes left; while unpickling, every array is at most the file's size and all the
bytes the stand-ins make together at most twice it (:class:`_Budget`); and ``bins`` may not list one object twice.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import pathlib
import pickle
import pickletools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import DataError
from .images import decode_image

PathLike = str | os.PathLike

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG"


class _Refused(Exception):
    """A stand-in's argument check failed (turned into a DataError naming the file)."""


class _Budget:
    """The bytes the stand-ins may make while one file unpickles.

    A genuine file builds each blob once from its own bytes (twice for a protocol-2 numpy array: the latin1 string,
    then the array), so together they stay under twice the file's length; one memoized blob copied thousands of
    times (a few bytes of opcodes per copy) does not.
    """

    def __init__(self, size: int):
        self.size, self.used = size, 0

    def take(self, n: int, what: str) -> None:
        if n > self.size:
            raise _Refused(f"{what} asks for {n} bytes, more than the whole file ({self.size} bytes)")
        self.used += n
        if self.used > 2 * self.size:
            raise _Refused(f"{what} would bring the bytes made from the file to {self.used}, more than twice its "
                           f"{self.size} bytes; a genuine .bin builds each image once from its own bytes")


def _latin1_encode(obj: Any, encoding: Any = "utf-8", *rest: Any, budget: _Budget) -> bytes:
    if rest or not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode called with {type(obj).__name__}, {encoding!r}; only (str, 'latin1') is "
                       "accepted")
    budget.take(len(obj), "_codecs.encode()")
    return obj.encode("latin1")


def _bytes(*args: Any) -> bytes:
    if args:
        raise _Refused("builtins.bytes called with arguments; only bytes() is accepted")
    return b""


def _bytearray(*args: Any, budget: _Budget) -> bytearray:
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        budget.take(len(args[0]), "bytearray()")
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        budget.take(len(args[0]), "bytearray()")
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


def _check_dtype(d: Any) -> np.dtype:
    """Bool and integer dtypes only: fixed small item sizes, no Python objects, nothing a BUILD can resize."""
    if not isinstance(d, np.dtype):
        raise _Refused(f"numpy got {type(d).__name__} where a dtype belongs")
    if d.hasobject:
        raise _Refused(f"numpy dtype {d} holds Python objects; only numeric arrays are accepted")
    if d.kind not in "biu" or d.fields is not None or d.subdtype is not None:
        raise _Refused(f"numpy dtype {d} is not a bool or integer type; a .bin holds uint8 image bytes and bool "
                       "labels")
    return d


def _np_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if isinstance(obj, bytes):
        obj = obj.decode("latin1")
    if not isinstance(obj, str):
        raise _Refused(f"numpy.dtype called with {type(obj).__name__}; only a type string is accepted")
    try:
        d = np.dtype(obj, bool(align), True)  # always a copy: the pickle's BUILD then changes no shared dtype
    except TypeError as exc:
        raise _Refused(f"numpy.dtype({obj!r}): {exc}") from None
    return _check_dtype(d)


def _shape(shape: Any, what: str) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or not all(type(n) is int and n >= 0 for n in shape):
        raise _Refused(f"{what} with shape {shape!r}; expected a tuple of sizes")
    return tuple(shape)


class _NdarrayToken:
    """What a pickle gets for the global ``numpy.ndarray``: only :func:`_np_reconstruct` accepts it, as the class to
    build. The real class is callable by REDUCE with any shape, and numpy never pickles a call to it."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("the pickle calls numpy.ndarray(...) directly, which allocates whatever shape the file names; "
                       "numpy itself writes arrays through _reconstruct")

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()


class _PickledArray(np.ndarray):
    """The arrays a pickle builds. BUILD may set the state of one made by ``_reconstruct``, once, with a bool or
    integer dtype, its data charged to the file's budget; numpy's own ``__setstate__`` then checks the data fits."""

    def __setstate__(self, state: Any) -> None:
        budget = self.__dict__.pop("_budget", None)
        if budget is None:
            raise _Refused("BUILD on a numpy array that _reconstruct did not just create")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"numpy array state is a {type(state).__name__}; expected (version, shape, dtype, "
                           "fortran, data)")
        _shape(state[-4], "numpy array state")
        _check_dtype(state[-3])
        if not isinstance(state[-1], (bytes, bytearray)):
            raise _Refused(f"numpy array data is a {type(state[-1]).__name__}; expected bytes")
        budget.take(len(state[-1]), "a numpy array's data")
        super().__setstate__(state)


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any, *, budget: _Budget) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise _Refused("numpy _reconstruct of a class other than numpy.ndarray")
    shape = _shape(shape, "numpy _reconstruct")
    d = _np_dtype(dtype) if isinstance(dtype, (bytes, str)) else _check_dtype(dtype)
    nbytes = math.prod(shape) * d.itemsize
    if nbytes > budget.size:
        raise _Refused(f"numpy _reconstruct asks for an array of {nbytes} bytes, more than the whole file "
                       f"({budget.size} bytes); numpy itself writes shape (0,) there")
    budget.take(nbytes, "numpy _reconstruct")
    real = _numpy_attr(("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"))
    arr = real(_PickledArray, shape, d)
    arr._budget = budget
    return arr


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, *, budget: _Budget) -> np.ndarray:
    _check_dtype(dtype)
    if not isinstance(buf, (bytes, bytearray)):
        raise _Refused(f"numpy _frombuffer of a {type(buf).__name__}; expected bytes")
    shape = _shape(shape, "numpy _frombuffer")
    budget.take(len(buf), "numpy _frombuffer")
    real = _numpy_attr(("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"))
    return real(buf, dtype, shape, order).view(_PickledArray)  # a view: no _budget, so no BUILD on it


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    _check_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused(f"numpy scalar of {dtype} needs {dtype.itemsize} bytes of data")
    real = _numpy_attr(("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"))
    return real(dtype, data)


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
_NUMPY[("numpy", "ndarray")] = _NDARRAY
_NUMPY[("numpy", "dtype")] = _np_dtype
#: The stand-ins that make bytes, and so draw on the file's :class:`_Budget`.
_BUDGETED = frozenset({_latin1_encode, _bytearray, _np_reconstruct, _np_frombuffer})

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
    def __init__(self, fh: io.BytesIO, path: pathlib.Path, allow_numpy: bool, size: int):
        super().__init__(fh, encoding="bytes")
        self._path = path
        budget = _Budget(size)
        self._allowed = {key: functools.partial(fn, budget=budget) if fn in _BUDGETED else fn
                         for key, fn in {**_BASIC, **(_NUMPY if allow_numpy else {})}.items()}

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


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _prescan(data: bytes, path: pathlib.Path) -> None:
    """Refuse, before unpickling, what makes CPython's C unpickler allocate far more than the file holds before it
    notices anything wrong: a memo index beyond the opcodes read so far (its memo grows to twice the index, zeroed:
    9 bytes can ask for 64 GB) and a length beyond the bytes left (BINBYTES, BINBYTES8 and BYTEARRAY8 allocate the
    declared length before reading). ``pickletools.genops`` walks the opcodes without building any object; a
    pickler numbers its memo entries in order, so genuine files never trip this."""
    f = io.BytesIO(data)
    start = ops = 0
    try:
        for op, arg, pos in pickletools.genops(f):
            if op.name in _MEMO_PUTS and arg > ops:
                raise DataError(f"{path}: not a readable pickle (at byte {pos}, {op.name}: memo index {arg} after only "
                                f"{ops} opcode{'s' * (ops != 1)}); the file is corrupt or hostile: unpickling it "
                                "would reserve memory for that many objects. Re-download it.")
            ops += 1
            start = f.tell()
    except ValueError as exc:  # genops' truncated argument, unknown opcode, missing STOP
        op = pickletools.code2op.get(chr(data[start])) if start < len(data) else None
        raise DataError(f"{path}: not a readable pickle (at byte {start}, {op.name if op else 'end of file'}: {exc}); "
                        f"the file is truncated or corrupt ({len(data)} bytes). Re-download it.") from None


def safe_load_pickle(path: PathLike, data: bytes | None = None, allow_numpy: bool = True) -> Any:
    """Unpickle ``path`` (or ``data``, reported as ``path``) with the restricted unpickler, ``encoding="bytes"``,
    after :func:`_prescan`; what it builds is bounded by the file's length."""
    path = pathlib.Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: file not found. Check the path to the verification .bin.") from None
    _prescan(data, path)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path, allow_numpy, len(data)).load()
    except DataError:
        raise
    except _Refused as exc:
        raise DataError(f"{path}: refused while unpickling: {exc}. A genuine .bin needs none of this and lrfr runs no "
                        "code from a downloaded file: re-download it from the official source.") from None
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


def _validate(obj: Any, where: str, check_signatures: bool, loading: bool = True) -> tuple[list[bytes], list[bool]]:
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        kind = f"a {len(obj)}-element {type(obj).__name__}" if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise DataError(f"{where}: holds {kind}; a verification .bin holds a 2-tuple (bins, issame_list).")
    raw_bins, raw_same = obj
    if not isinstance(raw_bins, (list, tuple)):
        raise DataError(f"{where}: bins is a {type(raw_bins).__name__}, expected a list of encoded images.")
    if not isinstance(raw_same, (list, tuple, np.ndarray)):
        raise DataError(f"{where}: issame_list is a {type(raw_same).__name__}, expected a list of bools.")
    bins: list[bytes] = []
    first: dict[int, int] = {}
    repeat: tuple[int, int] | None = None
    for i, item in enumerate(raw_bins):
        j = first.setdefault(id(item), i)
        if j != i:  # the same object again: reuse its blob rather than copy it once more
            repeat = repeat or (i, j)
            bins.append(bins[j])
            continue
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
    if loading and repeat:  # every entry decodes to 112x112x3 bytes: repeats would multiply a tiny file
        raise DataError(f"{where}: bins[{repeat[0]}] is the same pickled object as bins[{repeat[1]}] (a memo "
                        "reference); a .bin stores every image's bytes at its own place. The file is corrupt or "
                        "hostile; re-pack the images with lrfr_plugins.formats.write_verification_bin.")
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
    clean_bins, clean_same = _validate((list(bins), list(issame)), f"{path} (writing)", check_signatures,
                                       loading=False)
    seen: set[int] = set()
    for i, blob in enumerate(clean_bins):
        if id(blob) in seen:  # pickle would write a memo reference, which the loader refuses: store a copy
            clean_bins[i] = blob = bytes(memoryview(blob))
        seen.add(id(blob))
    atomic_write_bytes(path, pickle.dumps((clean_bins, clean_same), protocol=4))
