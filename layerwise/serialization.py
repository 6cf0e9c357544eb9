"""Saving and loading weights: safetensors for arrays, JSON for everything else, never pickle.

A safetensors file is an 8-byte header length, a JSON header (names, dtypes, shapes, offsets
and a ``__metadata__`` dict of strings) and the raw bytes. Loading it runs no code, unlike a
pickle, so a checkpoint from a stranger is safe to open.

    lw.save(model.state_dict(), "model.safetensors", metadata={"epoch": 3})
    model.load_state_dict(lw.load("model.safetensors"))

Writes go to a temporary file in the same directory, are fsynced, then ``os.replace``d into
place: a crash leaves either the old file or the new one, never half of one.

Reading (``layerwise.safetensors_reader``) checks the header against the file's size before it
reads any tensor, so a crafted or truncated file fails with one ``BadFileError`` line, and
widens the dtypes NumPy lacks (BF16, FP8, FP4) to float32 exactly.
"""

import hashlib
import json
import os
import struct
import tempfile
from collections import OrderedDict

from safetensors import numpy as safetensors_numpy

from layerwise.autograd import Tensor
from layerwise.backend import xp
from layerwise.safetensors_reader import JSON_KEYS as _JSON_KEYS
from layerwise.safetensors_reader import ORDER_KEY as _ORDER_KEY
from layerwise.safetensors_reader import read_file

_HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a file


def save(obj, path, metadata=None):
    """Write a state dict (name -> Tensor or array) to ``path`` in safetensors format.

    ``metadata`` is a dict with string keys; string values are stored as they are, any other
    JSON-able value (numbers, lists, dicts) is stored JSON-encoded and decoded by ``load_metadata``.
    """
    write_bytes_atomic(path, to_bytes(obj, metadata))


def load(path):
    """Read a safetensors file written by ``save`` (or by any safetensors writer).

    Returns an OrderedDict name -> Tensor in the order the names were saved. BF16, FP8 and
    FP4 tensors come back as float32 holding exactly their values (NumPy has no such types);
    a file that is truncated, crafted or not safetensors raises a one-line BadFileError.
    """
    tensors, _ = load_with_metadata(path)
    return tensors


def load_metadata(path):
    """The metadata dict saved with ``save(..., metadata=...)``, values decoded back."""
    _, metadata = load_with_metadata(path)
    return metadata


def load_with_metadata(path):
    """(OrderedDict name -> Tensor, metadata dict) from one read of the file."""
    arrays, metadata = read_file(path)
    return OrderedDict((name, Tensor(xp.asarray(a))) for name, a in arrays.items()), metadata


def to_bytes(obj, metadata=None):
    """The safetensors bytes for a state dict and metadata (what ``save`` writes)."""
    if not isinstance(obj, dict):
        raise TypeError(
            f"save expects a state dict (name -> Tensor or array), got {type(obj).__name__}; "
            "for a model, pass model.state_dict()"
        )
    arrays = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"state dict keys must be strings, got {name!r}")
        array = value.data if isinstance(value, Tensor) else value
        if isinstance(array, xp.generic):  # a NumPy scalar such as np.int64(3): its 0-d array
            array = xp.asarray(array)
        if not hasattr(array, "dtype") or not hasattr(array, "shape"):
            raise TypeError(
                f"state dict entry {name!r} is a {type(value).__name__}, expected a Tensor or "
                "array; put plain numbers in metadata= instead"
            )
        # safetensors needs C order; not ascontiguousarray, which turns 0-d arrays into 1-d.
        arrays[name] = array if array.flags.c_contiguous else array.copy(order="C")
    header = _encode_metadata(metadata or {})
    header[_ORDER_KEY] = json.dumps(list(arrays))
    return _canonical_header(safetensors_numpy.save(arrays, metadata=header))


def _canonical_header(data):
    """The same file with its JSON header's keys sorted.

    The library emits ``__metadata__`` from a hash map, in an order that changes from call to
    call; sorting makes equal state dicts give byte-identical files, which is what lets a
    resumed run be compared with an uninterrupted one by their bytes. Offsets in the header
    count from the end of the header, so rewriting it moves nothing else.
    """
    (n,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    header = header.encode("utf-8")
    header += b" " * (-len(header) % 8)  # the format pads the header with spaces to 8 bytes
    return struct.pack("<Q", len(header)) + header + data[8 + n :]


def file_sha256(path):
    """Hex SHA-256 of the bytes of the file at ``path``, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_bytes_atomic(path, data):
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    write_atomic(path, lambda f: f.write(data), mode="wb")


def write_text_atomic(path, text):
    write_atomic(path, lambda f: f.write(text), mode="w")


def write_atomic(path, write, mode="wb"):
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, rename it into place.

    The temporary file lives in the same directory so ``os.replace`` is a rename on one file
    system (atomic on POSIX and Windows). If anything fails, the temporary file is removed and
    the old ``path`` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "."
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"cannot write {path}: the directory {directory} does not exist"
        ) from None
    except OSError as err:
        raise _naming(err, path) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would give
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from None
        raise
    _fsync_directory(directory)


def _naming(err, path):
    """The same OSError (a full disk, no permission) as one line that names ``path``, which
    the library's own message may not: a failed write names no file at all."""
    if err.errno is None:
        return type(err)(f"cannot write {path}: {err}")
    return OSError(err.errno, f"cannot write {path}: {err.strerror or os.strerror(err.errno)}")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encode_metadata(metadata):
    header, json_keys = {}, []
    for key, value in metadata.items():
        if not isinstance(key, str) or key in (_ORDER_KEY, _JSON_KEYS):
            raise ValueError(
                f"metadata keys must be strings other than the reserved names, got {key!r}"
            )
        if isinstance(value, str):
            header[key] = value
        else:
            try:
                header[key] = json.dumps(value)
            except TypeError:
                raise TypeError(
                    f"metadata[{key!r}] is a {type(value).__name__}, which JSON cannot encode"
                ) from None
            json_keys.append(key)
    if json_keys:
        header[_JSON_KEYS] = json.dumps(sorted(json_keys))
    return header


# --- optimizer state: nested dicts into flat tensors + JSON, and back --------------------------


def flatten_optimizer_state(state_dict, prefix="optim."):
    """Split an optimizer state_dict into (tensors, json_part) for safetensors + JSON.

    Tensors and arrays under ``state`` become flat entries ``"{prefix}state.{idx}.{name}"``;
    numbers under ``state`` and all of ``param_groups`` go into the JSON part. Together they
    restore exactly through ``unflatten_optimizer_state``.
    """
    tensors, scalars, index = {}, {}, []
    for idx, per_param in state_dict["state"].items():
        scalars[str(idx)] = {}
        for name, value in per_param.items():
            if isinstance(value, Tensor) or getattr(value, "ndim", 0) > 0:
                key = f"{prefix}state.{idx}.{name}"
                tensors[key] = value
                index.append([key, int(idx), name])  # so loading never has to parse a key
            else:
                scalars[str(idx)][name] = _plain(value)
    json_part = {
        "state": scalars,
        "param_groups": _plain(state_dict["param_groups"]),
        "tensors": index,
    }
    return tensors, json_part


def unflatten_optimizer_state(tensors, json_part):
    """The inverse of ``flatten_optimizer_state``: a state_dict for optimizer.load_state_dict."""
    state = {int(idx): dict(values) for idx, values in json_part["state"].items()}
    for key, idx, name in json_part["tensors"]:
        if key not in tensors:
            raise ValueError(f"optimizer state entry {key!r} is missing from the checkpoint")
        state.setdefault(int(idx), {})[name] = tensors[key]
    groups = [dict(group) for group in json_part["param_groups"]]
    for group in groups:
        # JSON has no tuples; put back the ones that PyTorch-style optimizers hold as tuples.
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


def _plain(value):
    """Numbers and containers as JSON-able Python values (numpy scalars become int/float)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Tensor):
        value = value.data
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value
