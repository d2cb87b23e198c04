"""Atomic artifact I/O and content hashes shared by every pipeline stage.

Every file the toolkit writes goes through :func:`atomic_write`: the bytes land in a temporary
file in the same directory and are moved into place with ``os.replace``, so a crash or an
interrupt never leaves a half-written artifact under the final name. Only JSON, JSONL and
safetensors are written or read; nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# errno -> (what happened, what to do about it)
_STORAGE_CAUSES = {
    errno.ENOSPC: ("the disk is full (no space left on the device)", "free space there"),
    errno.EDQUOT: ("the disk quota is used up", "free space there"),
    errno.EROFS: ("the file system is read-only", "make it writable"),
    errno.EACCES: ("permission denied", "fix its permissions"),
    errno.EPERM: ("the operation is not permitted", "fix its permissions"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "remove or rename that file"),
    errno.EEXIST: ("a file stands where a folder is needed", "remove or rename that file"),
}
OUTPUT_OPTION = "--out"


class StorageError(OSError):
    """The machine cannot store a file (full disk, read-only or non-folder path, no permission); the message names the
    path, the cause and the fix. Whatever was being written is left unfinished, so rerunning the command resumes.

    Attributes:
        path: the file or folder that could not be written; option: the setting that moves that folder
            (``--out``, ``$WSTEER_CACHE``).
    """

    def __init__(self, code: int, path: str | Path, option: str = OUTPUT_OPTION):
        super().__init__(code, _STORAGE_CAUSES[code][0], str(path))
        self.path, self.option = str(path), option

    def __str__(self) -> str:
        cause, fix = _STORAGE_CAUSES[self.errno]
        return (f"cannot write {self.path}: {cause}. {fix.capitalize()}, or point {self.option} at another folder, then rerun the same "
                "command: finished stages are kept and it resumes where it stopped")


@contextlib.contextmanager
def storage_errors(where: str | Path, option: str | None = None) -> Iterator[None]:
    """Turn an ``OSError`` of the machine (full disk, read-only, permission, a file in the path) raised inside the block
    into a :class:`StorageError` that names the path, the cause and the fix; ``option`` names the setting that moves
    the folder (default ``--out``; an outer block's option replaces an inner default). Other errors pass unchanged.

    Raises:
        StorageError: for the errnos of :data:`_STORAGE_CAUSES`.
    """
    try:
        yield
    except StorageError as err:
        if option is not None and err.option == OUTPUT_OPTION and option != OUTPUT_OPTION:
            raise StorageError(err.errno, err.path, option) from err.__cause__
        raise
    except OSError as err:
        if err.errno not in _STORAGE_CAUSES:
            raise
        raise StorageError(err.errno, err.filename or where, option or OUTPUT_OPTION) from err


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to ``path`` and move it to ``path`` only on success.

    Args:
        path: final file name; parent directories are created.
        mode: ``"w"`` (text, UTF-8) or ``"wb"`` (bytes).

    Yields:
        The open temporary file object. If the ``with`` body raises, the temporary file is
        removed and ``path`` is untouched.

    Raises:
        StorageError: the machine cannot store the file (:func:`storage_errors`).
    """
    path = Path(path)
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_save_path(path: str | Path) -> Path:
    """Return a temporary sibling name for writers that need a path (e.g. ``savefig``).

    Call :func:`commit_path` with the same pair afterwards to move it into place.
    """
    path = Path(path)
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


def commit_path(tmp: Path, path: str | Path) -> None:
    """Atomically move ``tmp`` (from :func:`atomic_save_path`) to ``path``."""
    with storage_errors(path):
        os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, default=_json_default)
        handle.write("\n")


def check_number(owner: str, name: str, value, *, minimum: float | None = None, above: float | None = None, integer: bool = False,
                 optional: bool = False) -> None:
    """Refuse a non-finite, non-numeric or out-of-range setting where it is parsed.

    Raises:
        ValueError: naming ``owner.name``, the value and the allowed range.
    """
    import math

    if value is None and optional:
        return
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (integer and int(value) != value)
    if not bad and minimum is not None and value < minimum:
        bad = True
    if not bad and above is not None and value <= above:
        bad = True
    if bad:
        kind = "an integer" if integer else "a finite number"
        limit = f" ≥ {minimum:g}" if minimum is not None else (f" > {above:g}" if above is not None else "")
        raise ValueError(f"{owner}.{name} must be {kind}{limit}; got {value!r}")


class ArtifactError(ValueError):
    """A JSON / JSONL file is not valid JSON; the message names the file, the line and the fix."""


def check_output_folder(out: str | Path, option: str = "--out") -> Path:
    """Return ``out`` as a Path; raise ``ValueError`` if it, or a folder above it, is an existing file (nothing could be
    written there, and only after the model had loaded)."""
    out = Path(out)
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            where = "is an existing file" if path == out else f"lies below {path}, which is a file"
            raise ValueError(f"{option} {out} {where}; give a folder (it is created if missing)")
    return out


def read_json(path: str | Path) -> Any:
    """Read a JSON file.

    Raises:
        ArtifactError: the file is not valid JSON (names the file, line and column).
    """
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise ArtifactError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}; "
                                "fix the file (or delete it if a stage wrote it, and rerun)") from err


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file into a list of dicts."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ArtifactError(f"{path} line {line_no} is not valid JSON ({err.msg}): the file is truncated or damaged; "
                                    "delete it (or its stage folder) and rerun") from err
    return rows


class SafetensorsSpool:
    """Write a safetensors file one tensor at a time, with one tensor in memory at once: the tensors go to an unnamed
    spool file as they come, and :meth:`commit` writes the safetensors file (atomically) from it. The bytes are those of
    ``safetensors.torch.save_file`` on the same dict without metadata (a compact JSON header listing the tensors by
    name, padded with spaces to a multiple of 8 bytes, then the data in that order); one dtype per file (fp32 deltas).

    Raises:
        ValueError: a tensor whose dtype differs from the first one's, or a name added twice.
        StorageError: the spool or the file cannot be written.
    """

    DTYPES = {"torch.float32": "F32", "torch.float64": "F64", "torch.bfloat16": "BF16", "torch.float16": "F16"}

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with storage_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._spool = tempfile.TemporaryFile(dir=self.path.parent)
        self._entries: dict[str, tuple[str, list[int], int, int]] = {}  # name -> (dtype, shape, spool offset, bytes)

    def add(self, name: str, tensor) -> None:
        """Append one tensor (moved to the CPU, made contiguous); it need not be kept by the caller."""
        dtype = self.DTYPES[str(tensor.dtype)]
        if name in self._entries:
            raise ValueError(f"tensor {name!r} added twice to {self.path}")
        if self._entries and dtype != next(iter(self._entries.values()))[0]:
            raise ValueError(f"{self.path}: one dtype per spooled file; {name} is {dtype}")
        data = tensor.detach().to("cpu").contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes()
        with storage_errors(self.path):
            offset = self._spool.seek(0, os.SEEK_END)
            self._spool.write(data)
        self._entries[name] = (dtype, list(tensor.shape), offset, len(data))

    def __len__(self) -> int:
        return len(self._entries)

    def commit(self) -> Path:
        """Write the safetensors file from the spool (atomically) and close the spool; returns the path."""
        header, position = {}, 0
        for name in sorted(self._entries):
            dtype, shape, _, size = self._entries[name]
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [position, position + size]}
            position += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with atomic_write(self.path, "wb") as handle:
            handle.write(len(text).to_bytes(8, "little"))
            handle.write(text)
            for name in sorted(self._entries):
                _, _, offset, size = self._entries[name]
                self._spool.seek(offset)
                handle.write(self._spool.read(size))
        self._spool.close()
        return self.path


DW_FOLDER = re.compile(r"dw-(?P<family>[a-z0-9_]+)-seed(?P<seed>\d+)")  # how the main job names a dW folder


def read_dw_results(paths: Iterable[str | Path], filename: str, command: str, error: type[Exception]) -> list[dict]:
    """The JSON result ``filename`` of each folder (or the file itself) that ``command`` wrote about one dW, with the
    dW's ``family`` and training seed (``dw_seed``) read from its folder name (``dw-<family>-seed<s>-…``: the result's ``"dw"``
    path, else the result folder's own name) and ``path`` (the file read).

    Raises:
        error: a missing file, a file that is not JSON, a result that does not name a family and seed, or two results
            for the same (family, seed); each message names the file and the fix.
    """
    results, seen = [], {}
    for path in paths:
        path = Path(path)
        file = path / filename if path.is_dir() else path
        if not file.is_file():
            raise error(f"no {filename} at {file}; give the folder `{command}` wrote")
        try:
            result = json.loads(file.read_text())
        except ValueError as err:
            raise error(f"{file} is not valid JSON ({err}); run `{command}` again") from err
        match = DW_FOLDER.search(str(result.get("dw", "") if isinstance(result, dict) else "")) or DW_FOLDER.search(file.parent.name)
        if match is None or not isinstance(result, dict):
            raise error(f"{file}: its dW does not name a family and seed (dw-<family>-seed<s>-…); give a result of `{command}`")
        key = (match["family"], int(match["seed"]))
        if key in seen:
            raise error(f"{file} and {seen[key]} are both for {key[0]} seed {key[1]}; give one result per dW")
        seen[key] = file
        results.append({**result, "family": key[0], "dw_seed": key[1], "path": str(file)})
    return results


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (sorted keys), truncated to ``length`` hex digits."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def tensors_sha256(tensors: dict) -> str:
    """SHA-256 over a tensor dict's names, dtypes, shapes and bytes, in sorted name order (the identity of a dW in stage keys)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Full SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
