"""Official files fetched over the network: downloaded into a temporary file, their md5 checked,
and only then renamed into place, so a failed or tampered download never leaves a file behind
and nothing a user placed is written over. CIFAR (:mod:`.cifar`) and the IDX datasets
(:mod:`.idx`) share it."""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..files import atomic_path


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# What trains with no network: named by every "cannot download" message, so that a user offline
# learns of them where they are stuck.
OFFLINE = (
    "Offline, train on the data named synthetic (random images), or on fashion-mnist from "
    "Debian's copy of the official files (apt-get install dataset-fashion-mnist)."
)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders that must be made for ``folder`` to exist, outermost first (a file in the way
    was refused by :func:`mnv3spec.data.datasets.check_name` before any work)."""
    made = []
    for part in (folder, *folder.parents):
        if os.path.lexists(part):
            break
        made.append(part)
    return made[::-1]


def _remove_empty(folders: list[Path]) -> None:
    """Undo the folders a failed download made (only those left empty: never a user's file)."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def download(url: str, md5: str, target: Path, *, missing: str, fix: str) -> None:
    """Fetch ``url`` to ``target`` if its md5 is ``md5``; else a DataError ending in ``fix`` (what
    the user can do instead) and :data:`OFFLINE`, with ``target`` untouched and no folder left
    behind that this call made. ``missing`` says what was not found ("CIFAR-10 is not in
    ./data")."""
    made = _missing_folders(target.parent)
    print(f"downloading {url} to {target}", file=sys.stderr)
    try:
        _fetch(url, md5, target, missing, fix)
    except BaseException:
        _remove_empty(made)
        raise


def _fetch(url: str, md5: str, target: Path, missing: str, fix: str) -> None:
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
            if (found := md5_of(tmp)) != md5:
                raise DataError(
                    f"the file downloaded from {url} has md5 {found}, expected {md5}, so it "
                    f"was not kept. {fix} {OFFLINE}"
                )
    except (OSError, urllib.error.URLError) as e:
        raise DataError(f"{missing} and downloading it failed ({e}). {fix} {OFFLINE}") from e
