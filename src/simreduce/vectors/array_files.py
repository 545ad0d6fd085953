"""Arrays stored whole in one file: `.npy`, `.npz`, `.safetensors` and `.fvecs`, memory-mapped where the format
allows (all but `.npz`, whose member numpy reads whole) and never unpickled."""

import json
from pathlib import Path

import numpy as np

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.input_files import setting

SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1"}


def read_array(path: Path, key: str | None) -> np.ndarray:
    """The array in `path` as stored (any shape and dtype: the caller checks them); `key` names an `.npz` or
    `.safetensors` member, and may be None where the file holds only one."""
    readers = {".npy": _read_npy, ".npz": _read_npz, ".safetensors": _read_safetensors, ".fvecs": _read_fvecs}
    return readers[path.suffix.lower()](path, key)


def _read_npy(path: Path, key: str | None) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e) or "object" in str(e):  # object arrays cannot be mapped, and are never unpickled
            raise SimreduceError(f"{str(path)!r} is not a numeric .npy array ({e}): save float32 vectors.") from e
        raise SimreduceError(f"{str(path)!r} is not a readable .npy file ({e}): write it again.") from e
    except OSError as e:
        raise SimreduceError(f"{str(path)!r} is not a readable .npy file ({e}).") from e
    if not isinstance(array, np.ndarray):
        raise SimreduceError(f"{str(path)!r} is an .npz archive, not an .npy array: rename it to .npz.")
    return array


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SimreduceError(f"{str(path)!r} is not a readable .npz archive ({e}).") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SimreduceError(f"{str(path)!r} is an .npy array, not an .npz archive: rename it to .npy.")
    with archive:
        key = _pick_key(path, key, list(archive.files))
        try:
            return archive[key]
        except ValueError as e:  # an object array, never unpickled
            raise SimreduceError(f"{str(path)!r}: {key!r} is not a numeric array ({e}).") from e


def _read_safetensors(path: Path, key: str | None) -> np.ndarray:
    """The tensor `key`, mapped at its offset (the format: an 8-byte header length, a JSON header, the data);
    the header's promises are checked against the file's size before anything is mapped."""
    size = path.stat().st_size

    def unreadable(why: str) -> SimreduceError:
        return SimreduceError(f"{str(path)!r} is not a readable .safetensors file: {why}; write it again.")

    with path.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if size < 8 or header_len > size - 8:
            raise unreadable(f"its header claims {header_len:,} bytes of the file's {size:,}")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, ValueError) as e:
            raise unreadable(f"its header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise unreadable("its header is not a JSON object")
    key = _pick_key(path, key, [k for k in header if k != "__metadata__"])
    entry = header[key]
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise unreadable(f"tensor {key!r} lacks its dtype, shape or data_offsets")
    if entry["dtype"] == "BF16":  # numpy has no bfloat16: torch reads it and widens it
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(key).float().numpy()
    if entry["dtype"] not in SAFETENSORS_DTYPES:
        raise SimreduceError(f"{str(path)!r}: tensor {key!r} holds {entry['dtype']} values, not real numbers.")
    shape, (start, end) = tuple(entry["shape"]), entry["data_offsets"]
    needed = int(np.prod(shape, dtype=object)) * np.dtype(SAFETENSORS_DTYPES[entry["dtype"]]).itemsize
    if not 0 <= start <= end <= size - 8 - header_len or end - start != needed:
        raise unreadable(
            f"tensor {key!r} of shape {list(shape)} needs {needed:,} bytes, its offsets give {end - start:,} and "
            f"the file holds {size - 8 - header_len:,} after the header"
        )
    return np.memmap(path, SAFETENSORS_DTYPES[entry["dtype"]], mode="c", offset=8 + header_len + start, shape=shape)


def _read_fvecs(path: Path, key: str | None) -> np.ndarray:
    """The TEXMEX format: each row is its width as int32, then that many float32 values."""
    size = path.stat().st_size
    if size < 8 or size % 4:
        raise SimreduceError(
            f"{str(path)!r} is not an .fvecs file: its {size:,} bytes are not rows of [width, values] "
            "(empty, or cut short)."
        )
    raw = np.memmap(path, dtype="<i4", mode="c")
    width = int(raw[0])
    if width <= 0 or raw.size % (width + 1):
        raise SimreduceError(
            f"{str(path)!r} is not an .fvecs file: its size is not rows of [width, values] (cut short?)."
        )
    rows = raw.reshape(-1, width + 1)
    if len(wrong := np.flatnonzero(rows[:, 0] != width)):
        raise SimreduceError(f"{str(path)!r}: row {wrong[0]} is {rows[wrong[0], 0]} wide, not {width} as row 0.")
    return rows[:, 1:].view("<f4")


def _pick_key(path: Path, key: str | None, keys: list[str]) -> str:
    """`key`, or the only array in the file."""
    if key is None and len(keys) == 1:
        return keys[0]
    if key not in keys:
        given = "no data.key (--key)" if key is None else setting("key", key)
        raise SimreduceError(f"{str(path)!r} holds the arrays {keys}, {given} names none of them: pass one.")
    return key
