"""The model file: per-feature ham/spam mail counts written with ``np.savez``.

Read back with ``allow_pickle=False``: no pickle, nothing executable. The
layout is the one maildesk has always written (format 1, with the fields an
older reader of scikit-learn's ``MultinomialNB`` counts expects). Writes are
atomic (temporary file, fsync, rename) and one process writes at a time.
"""

from __future__ import annotations

import fcntl
import os
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

from maildesk.errors import MaildeskError
from maildesk.spam.tokenize import TOKENIZER_VERSION

N_FEATURES = 2**20
ALPHA = 0.1  # written to the file for older readers; scoring uses Robinson's prior instead
FORMAT_VERSION = 1
RETRAIN = "retrain: `maildesk spam train --reset --ham PATH --spam PATH`"

FloatArray = npt.NDArray[np.float64]
Stamp = tuple[int, int, int]


class SpamModelError(MaildeskError):
    """The model file exists but cannot be used (corrupt, or made by another tokenizer)."""


def file_stamp(path: Path) -> Stamp | None:
    """Changes with every atomic replace (a new inode), even within one mtime tick."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino, stat.st_size


@contextmanager
def file_lock(path: Path, wanted: bool) -> Iterator[None]:
    """One writer of the model file at a time, across processes: read, learn and replace
    happen as one step. The lock is a `flock` on the model's directory (the file itself
    is replaced by each save, and a lock file would be one more file to leave behind)."""
    if not wanted:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        yield
    finally:
        os.close(directory)  # releases the lock


def write_counts(path: Path, counts: FloatArray, classes: FloatArray, updates: int) -> None:
    """Write the counts to a temporary file, fsync it, then rename it over ``path``."""
    seen = np.flatnonzero(counts.sum(axis=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as handle:
            np.savez(
                handle,
                format_version=np.int64(FORMAT_VERSION),
                tokenizer_version=np.int64(TOKENIZER_VERSION),
                n_features=np.int64(N_FEATURES),
                alpha=np.float64(ALPHA),
                updates=np.int64(updates),
                classes=np.array([0, 1], dtype=np.int64),
                class_count=np.asarray(classes, dtype=np.float64),
                feature_index=seen.astype(np.int64),
                feature_count=counts[:, seen],
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_counts(path: Path) -> tuple[FloatArray, FloatArray, int]:
    """The counts, mails per class and updates in ``path`` (never unpickling anything)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        reason = "it holds pickled objects" if "allow_pickle" in str(exc) else str(exc)
        raise SpamModelError(f"{path}: not a maildesk spam model ({reason})") from None
    try:
        if int(arrays["format_version"]) != FORMAT_VERSION:
            raise SpamModelError(
                f"{path}: model format {int(arrays['format_version'])}, this maildesk reads "
                f"format {FORMAT_VERSION}: {RETRAIN}"
            )
        if int(arrays["tokenizer_version"]) != TOKENIZER_VERSION:
            raise SpamModelError(
                f"{path}: trained with tokenizer v{int(arrays['tokenizer_version'])}, "
                f"this maildesk has v{TOKENIZER_VERSION}: {RETRAIN}"
            )
        if int(arrays["n_features"]) != N_FEATURES:
            found = int(arrays["n_features"])
            raise SpamModelError(f"{path}: {found} features, expected {N_FEATURES}")
        index = arrays["feature_index"].astype(np.int64)
        counts = np.zeros((2, N_FEATURES), dtype=np.float64)
        counts[:, index] = arrays["feature_count"]
        classes = arrays["class_count"].astype(np.float64).reshape(2)
        return counts, classes, int(arrays["updates"])
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise SpamModelError(f"{path}: damaged spam model ({type(exc).__name__}: {exc})") from None
