"""Checkpoints: atomic, verifiable save; safe load; discovery; and RNG state capture for exact resume.

On-disk format
--------------
Every checkpoint ``<name>`` written by :func:`save_checkpoint` has a sidecar *integrity record*
``<name>.sha256`` beside it::

    # maskmm checkpoint record v1
    # bytes 1048917 sha256 9f2c...e1
    9f2c...e1  step_100.pt

The lines that do not start with ``#`` are in ``sha256sum`` format, so ``sha256sum -c
step_100.pt.sha256`` checks a checkpoint with standard tools (``#`` lines are comments to them);
the ``# bytes`` lines give the size of each listed digest, which lets :func:`verify_checkpoint`
reject a truncated file before hashing it. A record usually lists one digest; while a save
*overwrites* an existing name it briefly lists the new and the previous one (see below). Every
digest in a record is that of a complete, fsynced save under that name, so a file is intact if
its size and SHA-256 match any listed pair. The file name in the record is informational:
a checkpoint renamed together with its record still verifies.

Why one sidecar per checkpoint rather than one manifest per folder: each record is written
once, by the save that owns it, and removed together with its checkpoint. A folder manifest
would need a read-modify-write on every save and prune (racy when two writers share a folder,
e.g. a trainer and an export script), and one corrupt or half-edited manifest would make
every checkpoint of the folder untrusted at once. With sidecars a damaged record costs exactly
one checkpoint, and a copied checkpoint carries its record along.

Why it is safe against ``kill -9`` (and, with the fsyncs, against power loss) at every instant
---------------------------------------------------------------------------------------------
:func:`save_checkpoint` performs, in this order:

1. ``torch.save`` into ``.<name>.XXXXXXXX.tmp`` in the target folder, hashing the bytes as they
   are written; flush and fsync the file.
2. Write the record into ``.<name>.sha256.XXXXXXXX.tmp`` (fsync), listing the new digest and,
   when ``<name>`` already exists with a valid record, the digest of the file it replaces;
   ``os.replace`` it over ``<name>.sha256``; fsync the folder.
3. ``os.replace`` the checkpoint tmp file over ``<name>``; fsync the folder.
4. Only if step 2 listed a previous digest: rewrite the record (tmp file, fsync, ``os.replace``,
   fsync the folder) with the new digest alone.

A kill before step 2's rename leaves the previous pair untouched (plus tmp files, which
:func:`clean_stale_temporaries` removes). Between steps 2 and 3, ``<name>`` is either absent or
the previous file, which the record still lists. Between steps 3 and 4 ``<name>`` is the new
file, which the record lists. So a checkpoint that verifies is always a complete save, and a
save never creates a checkpoint without a record. :func:`prune_checkpoints` removes a checkpoint
before its record, so it never leaves a checkpoint without a record either; a kill in between
leaves an orphan record, which :func:`clean_stale_temporaries` also removes.

One transient window is not covered: overwriting a *legacy* checkpoint (one without a record)
makes it fail verification between steps 2 and 3, because no digest of it is known.

Legacy checkpoints
------------------
Files written before integrity records existed have no ``.sha256`` beside them.
:func:`verify_checkpoint` rejects them ("no integrity record"); :func:`load_checkpoint` and
:func:`latest_intact_checkpoint` accept them with a :class:`CheckpointIntegrityWarning` if they
load with ``weights_only=True`` (a structural check only: flipped bytes inside tensor data go
unnoticed for such files). Re-save them to give them a record.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import hashlib
import os
import random
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "CheckpointIntegrityWarning",
    "CheckpointSaveError",
    "capture_rng_state",
    "checkpoint_record_path",
    "clean_stale_temporaries",
    "latest_checkpoint",
    "latest_intact_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
    "verify_checkpoint",
]

RECORD_SUFFIX = ".sha256"
_RECORD_HEADER = "# maskmm checkpoint record v1"
_HASH_CHUNK = 4 << 20
# tempfile.mkstemp names: prefix + 8 characters from [a-z0-9_] + suffix
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_STEP_RE = re.compile(r"step_(\d+)\.pt$")
_SIZE_RE = re.compile(r"^# bytes (\d+) sha256 ([0-9a-f]{64})$")
_DIGEST_RE = re.compile(r"^([0-9a-f]{64})  \*?(.+)$")


class CheckpointError(ValueError):
    """A checkpoint that does not exist, is not intact, or cannot be loaded.

    Attributes:
        path: the checkpoint file.
        reason: what is wrong with it (also part of the message, which names the file).
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"checkpoint {str(self.path)!r}: {reason}")


class _MissingRecordError(CheckpointError):
    """The checkpoint exists but has no integrity record (a legacy file, or its record was deleted)."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed at the operating-system level (disk full, permissions, ...).

    ``errno`` and ``strerror`` are those of the underlying error; ``path`` is the checkpoint that
    could not be written. The message names both.
    """

    def __init__(self, path: str | os.PathLike, err: OSError, what: str = "cannot save checkpoint") -> None:
        self.path = Path(path)
        reason = err.strerror or str(err) or type(err).__name__
        super().__init__(err.errno, f"{what} {str(self.path)!r}: {reason}")


class CheckpointIntegrityWarning(UserWarning):
    """A checkpoint was skipped as not intact, or accepted without an integrity record (legacy)."""


def checkpoint_record_path(path: str | os.PathLike) -> Path:
    """The integrity record of checkpoint ``path``: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + RECORD_SUFFIX)


# ----------------------------------------------------------------------------- low-level helpers


def _fsync_dir(folder: Path) -> None:
    """fsync a folder so that renames inside it are durable; a no-op where the OS does not allow it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: str | os.PathLike | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):  # best effort, after an earlier failure
            os.unlink(path)


class _HashingWriter:
    """File-like wrapper for ``torch.save``: hashes and counts bytes, remembers the first OSError.

    torch's zip writer turns an exception from ``write`` into its own ``RuntimeError``
    ("enforce fail at inline_container.cc"), losing the OS reason; keeping the OSError here lets
    :func:`save_checkpoint` report it.
    """

    def __init__(self, f: Any) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            n = self._f.write(data)
        except OSError as e:
            if self.error is None:
                self.error = e
            raise
        view = memoryview(data)
        if n is not None and n != view.nbytes:  # pragma: no cover - blocking files write everything
            raise OSError(_errno.EIO, f"short write ({n} of {view.nbytes} bytes)")
        self.sha.update(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            if self.error is None:
                self.error = e
            raise


def _hash_file(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            sha.update(view[:n])
            size += n
    return size, sha.hexdigest()


def _format_record(name: str, entries: list[tuple[int, str]]) -> str:
    lines = [_RECORD_HEADER]
    lines += [f"# bytes {size} sha256 {digest}" for size, digest in entries]
    lines += [f"{digest}  {name}" for _, digest in entries]
    return "\n".join(lines) + "\n"


def _parse_record(text: str) -> list[tuple[int, str]]:
    """Entries ``(size, sha256)`` of a record; ``ValueError`` if it is malformed."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    if not lines or lines[0] != _RECORD_HEADER:
        raise ValueError("missing header line")
    sizes: dict[str, int] = {}
    digests: list[str] = []
    for ln in lines[1:]:
        if not ln:
            continue
        if m := _SIZE_RE.match(ln):
            sizes[m.group(2)] = int(m.group(1))
        elif ln.startswith("#"):
            continue
        elif m := _DIGEST_RE.match(ln):
            digests.append(m.group(1))
        else:
            raise ValueError(f"unexpected line {ln[:80]!r}")
    if not digests:
        raise ValueError("no digest")
    missing = [d for d in digests if d not in sizes]
    if missing:
        raise ValueError(f"no size for digest {missing[0]}")
    return [(sizes[d], d) for d in digests]


def _read_record(path: Path) -> list[tuple[int, str]]:
    """Entries of the record of checkpoint ``path``; raises CheckpointError (a missing record is a
    ``_MissingRecordError``)."""
    rec = checkpoint_record_path(path)
    try:
        raw = rec.read_bytes()
    except FileNotFoundError:
        raise _MissingRecordError(path, f"no integrity record (expected {rec.name!r} beside it)") from None
    except OSError as e:
        reason = f"integrity record {rec.name!r} is unreadable: {e.strerror or e}"
        raise CheckpointError(path, reason) from None
    try:
        return _parse_record(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(path, f"integrity record {rec.name!r} is malformed: {e}") from None


def _write_record(path: Path, entries: list[tuple[int, str]]) -> None:
    """Atomically (tmp file, fsync, rename, folder fsync) write the record of checkpoint ``path``."""
    rec = checkpoint_record_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{rec.name}.", suffix=".tmp", dir=rec.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(_format_record(path.name, entries))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, rec)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(rec.parent)


def _load_failure_reason(exc: BaseException) -> str:
    """A short reason for a failed ``torch.load``, without torch's advice to disable ``weights_only``."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = next((ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()), "")
        detail = detail.split(" Please use", 1)[0].strip()
        reason = "holds data outside the tensors/containers/numbers that safe loading allows"
        return f"{reason} ({detail})" if detail and "weights_only" not in detail else reason
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = first.split(". ", 1)[0].rstrip(".")
    if not first or "weights_only" in first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {first}"


def _safe_load(path: Path, map_location: Any, *, mmap: bool = False) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise CheckpointError(path, f"cannot be loaded: {_load_failure_reason(e)}") from None


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(path, "does not exist")
    if not path.is_file():
        raise CheckpointError(path, "is not a regular file")


def _probe_legacy(path: Path) -> None:
    """Structural check of a checkpoint without a record: a zip archive that torch can open."""
    try:
        ok = zipfile.is_zipfile(path)
    except OSError as e:
        raise CheckpointError(path, f"is unreadable: {e.strerror or e}") from None
    if not ok:
        raise CheckpointError(path, "cannot be loaded: not a torch zip archive (truncated, empty or garbage)")
    _safe_load(path, "cpu", mmap=True)


# ----------------------------------------------------------------------------- public API


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` atomically, together with its integrity record.

    The bytes go to a temporary file in the same folder (hashed while written, flushed,
    fsynced), the record ``<path>.sha256`` is written atomically, then the file is moved over
    ``path`` with ``os.replace`` and the folder is fsynced; see the module docstring for the
    exact order and why a kill at any instant leaves a consistent folder.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``state`` is not a dict.
        CheckpointSaveError: an OSError (e.g. "No space left on device") while writing; the
            message names ``path`` and the OS reason. No temporary file is left behind and an
            existing checkpoint at ``path`` (and any other) stays intact.
        Exception: anything ``torch.save`` raises for an unpicklable ``state``, unchanged.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CheckpointSaveError(path, e) from e
    writer: _HashingWriter | None = None
    record_written = False
    try:
        f = os.fdopen(fd, "wb")
        try:
            writer = _HashingWriter(f)
            torch.save(state, writer)
            f.flush()
            os.fsync(f.fileno())
            size, digest = writer.size, writer.sha.hexdigest()
            if os.fstat(f.fileno()).st_size != size:  # pragma: no cover - torch.save wrote non-sequentially
                size, digest = _hash_file(Path(tmp))
        finally:
            try:
                f.close()
            except OSError:  # the write error that got us here is the one to report
                if writer is not None and writer.error is None:
                    raise
        previous = _previous_entries(path)
        _write_record(path, [(size, digest), *previous])
        record_written = True
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        _unlink_quietly(tmp)
        if record_written and not path.exists():  # a record for a file that never arrived
            _unlink_quietly(checkpoint_record_path(path))
        raise CheckpointSaveError(path, e) from e
    except BaseException as e:
        _unlink_quietly(tmp)
        if record_written and not path.exists():
            _unlink_quietly(checkpoint_record_path(path))
        if writer is not None and writer.error is not None and isinstance(e, RuntimeError):
            raise CheckpointSaveError(path, writer.error) from writer.error
        raise
    if previous:
        try:
            _write_record(path, [(size, digest)])
        except OSError as e:  # the checkpoint is in place and verifies against the 2-entry record
            warnings.warn(
                f"checkpoint {str(path)!r} was saved, but its integrity record could not be "
                f"compacted: {e.strerror or e}",
                CheckpointIntegrityWarning,
                stacklevel=2,
            )
    return path


def _previous_entries(path: Path) -> list[tuple[int, str]]:
    """Digests under which the file now at ``path`` (being overwritten) verifies, to keep it intact
    until the new file has replaced it."""
    if not path.is_file():
        return []
    try:
        entries = _read_record(path)
    except CheckpointError:
        return []  # legacy or damaged record: the old file was not verifiable anyway
    if len(entries) == 1:
        return entries
    try:  # a record left with two digests by an interrupted overwrite: keep the one that matches
        actual = _hash_file(path)
    except OSError:
        return []
    return [actual] if actual in entries else []


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check that ``path`` is a complete checkpoint as written by :func:`save_checkpoint`.

    Compares the file's size, then its SHA-256, against its integrity record ``<path>.sha256``.

    Raises:
        CheckpointError: naming the file and the reason: it does not exist, has no integrity
            record (legacy file), the record is unreadable or malformed, the size differs
            (truncated or extended), the SHA-256 differs (corrupted), or the file is unreadable.
    """
    path = Path(path)
    _check_exists(path)
    entries = _read_record(path)
    try:
        actual_size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(path, f"is unreadable: {e.strerror or e}") from None
    if not any(size == actual_size for size, _ in entries):
        expected = " or ".join(str(size) for size, _ in entries)
        raise CheckpointError(
            path, f"size mismatch: the file has {actual_size} bytes, its record says {expected}"
        )
    try:
        size, digest = _hash_file(path)
    except OSError as e:
        raise CheckpointError(path, f"is unreadable: {e.strerror or e}") from None
    if (size, digest) not in entries:
        raise CheckpointError(
            path, f"SHA-256 mismatch: the file hashes to {digest}, its record says {entries[0][1]}"
        )


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, verify: bool = True
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``.
        verify: check the file against its integrity record first (:func:`verify_checkpoint`).
            A legacy file without a record is loaded with a :class:`CheckpointIntegrityWarning`.

    Always uses ``weights_only=True`` (tensors, plain containers and numbers only), so loading
    never executes code from the file.

    Raises:
        CheckpointError: (a ``ValueError``) naming the file: it does not exist, fails
            verification, or ``torch.load`` fails on it.
    """
    path = Path(path)
    _check_exists(path)
    if verify:
        try:
            verify_checkpoint(path)
        except _MissingRecordError:
            warnings.warn(
                f"checkpoint {str(path)!r} has no integrity record (legacy): loading it unverified",
                CheckpointIntegrityWarning,
                stacklevel=2,
            )
    return _safe_load(path, map_location)


def _step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    return [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.search(p.name))]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Newest ``step_<N>.pt`` in ``folder`` (highest N), or ``None``; does not check integrity."""
    found = _step_checkpoints(Path(folder))
    return max(found)[1] if found else None


def latest_intact_checkpoint(folder: str | os.PathLike, *, warn: bool = True) -> Path | None:
    """Newest ``step_<N>.pt`` of ``folder`` that verifies, for resuming; ``None`` if there is none.

    Walks the step checkpoints from the highest N down, runs :func:`verify_checkpoint` on each
    and returns the first that passes. Each skipped file gets a :class:`CheckpointIntegrityWarning`
    naming it and the reason (unless ``warn=False``). A legacy file (no integrity record) is
    accepted, with a warning, if it loads with ``weights_only=True`` (memory-mapped, so the
    check is cheap); otherwise it is skipped like any other bad file.

    A missing ``folder`` gives ``None``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} is not a directory")
    for _, path in sorted(_step_checkpoints(folder), key=lambda t: t[0], reverse=True):
        try:
            verify_checkpoint(path)
            return path
        except _MissingRecordError:
            try:
                _probe_legacy(path)
            except CheckpointError as e:
                if warn:
                    warnings.warn(f"skipping {e}", CheckpointIntegrityWarning, stacklevel=2)
                continue
            if warn:
                warnings.warn(
                    f"checkpoint {str(path)!r} has no integrity record (legacy); it loads, using it",
                    CheckpointIntegrityWarning,
                    stacklevel=2,
                )
            return path
        except CheckpointError as e:
            if warn:
                warnings.warn(f"skipping {e}", CheckpointIntegrityWarning, stacklevel=2)
    return None


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of saves that were killed in ``folder``; return what was removed.

    Removes only (a) regular files named like :func:`save_checkpoint`'s temporary files,
    ``.<name>.XXXXXXXX.tmp`` (8 characters from ``tempfile.mkstemp``), and (b) orphan integrity
    records ``<name>.sha256`` whose checkpoint ``<name>`` does not exist and whose content is a
    record in this module's format. Nothing else is touched, and sub-folders are not searched.

    Call it when no save into ``folder`` is in progress (e.g. when a run starts): it would
    remove the temporary file of a save running concurrently.

    Raises:
        ValueError: ``folder`` exists but is not a directory. A missing folder gives ``[]``.
    """
    folder = Path(folder)
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} is not a directory")
    removed: list[Path] = []
    for p in sorted(folder.iterdir()):
        if p.is_symlink() or not p.is_file():
            continue
        if _TMP_RE.match(p.name) or (p.name.endswith(RECORD_SUFFIX) and _is_orphan_record(p)):
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            removed.append(p)
    if removed:
        _fsync_dir(folder)
    return removed


def _is_orphan_record(rec: Path) -> bool:
    target = rec.with_name(rec.name[: -len(RECORD_SUFFIX)])
    if not rec.name[: -len(RECORD_SUFFIX)] or os.path.lexists(target):
        return False
    try:
        with open(rec, "rb") as f:
            head = f.read(len(_RECORD_HEADER) + 1)
    except OSError:
        return False
    return head.rstrip(b"\r\n") == _RECORD_HEADER.encode()


def prune_checkpoints(
    folder: str | os.PathLike, keep: int, *, written_by: Iterable[str | os.PathLike]
) -> list[Path]:
    """Keep the newest ``keep`` step checkpoints among those this run wrote; delete the older ones.

    Only paths listed in ``written_by`` (the ``step_<N>.pt`` files the caller saved) are ever
    deleted, so checkpoints of earlier runs, copies made by hand and files of other writers in
    ``folder`` are never touched. Each deleted checkpoint loses its integrity record too (the
    checkpoint is unlinked first, so a kill in between leaves an orphan record, never an
    unrecorded checkpoint). Paths that no longer exist are ignored.

    Args:
        folder: the checkpoint folder.
        keep: how many of the newest (highest N) listed checkpoints to keep, ``>= 0``.
        written_by: the checkpoint paths this run wrote.

    Returns:
        The checkpoint paths removed, oldest first.

    Raises:
        TypeError: ``keep`` is not an int.
        ValueError: ``keep < 0``, or a path of ``written_by`` is not a ``step_<N>.pt`` file
            directly inside ``folder``.
    """
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise TypeError(f"keep must be an int, got {type(keep).__name__}")
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    folder = Path(folder)
    if isinstance(written_by, (str, os.PathLike)):
        raise TypeError("written_by must be an iterable of paths, not a single path")
    root = folder.resolve()
    mine: dict[Path, int] = {}
    for p in written_by:
        p = Path(p)
        m = _STEP_RE.fullmatch(p.name)
        if m is None:
            raise ValueError(f"written_by: {str(p)!r} is not a step_<N>.pt checkpoint")
        if p.resolve().parent != root:
            raise ValueError(f"written_by: {str(p)!r} is not inside folder {str(folder)!r}")
        mine[folder / p.name] = int(m.group(1))
    ordered = sorted(mine, key=lambda q: mine[q])
    doomed = ordered[: max(len(ordered) - keep, 0)]
    removed: list[Path] = []
    for p in doomed:
        existed = os.path.lexists(p)
        try:
            p.unlink()
        except FileNotFoundError:
            existed = False
        checkpoint_record_path(p).unlink(missing_ok=True)
        if existed:
            removed.append(p)
    if doomed:
        _fsync_dir(folder)
    return removed


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """RNG states of Python, NumPy (if installed), torch CPU, CUDA (if available) and given generators.

    Python's and NumPy's states are stored as tensors/lists of ints so that the result loads
    with ``weights_only=True``.
    """
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {
            "version": py_version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "torch": torch.get_rng_state(),
    }
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "name": name,
            "keys": torch.from_numpy(keys.astype("int64")),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        }
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generators:
        state["generators"] = {k: g.get_state() for k, g in generators.items()}
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state` (missing entries are left untouched)."""
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state(
            (n["name"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached"])
        )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generators and "generators" in state:
        for k, g in generators.items():
            if k in state["generators"]:
                g.set_state(state["generators"][k].cpu())
