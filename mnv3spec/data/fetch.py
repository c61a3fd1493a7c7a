"""Official files fetched over the network: downloaded into a temporary file, their md5 checked,
and only then renamed into place, so a failed or tampered download never leaves a file behind
and nothing a user placed is written over. CIFAR (:mod:`.cifar`) and the IDX datasets
(:mod:`.idx`) share it."""

from __future__ import annotations

import hashlib
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


def download(url: str, md5: str, target: Path, *, missing: str, fix: str) -> None:
    """Fetch ``url`` to ``target`` if its md5 is ``md5``; else a DataError ending in ``fix`` (what
    the user can do instead), with ``target`` untouched. ``missing`` says what was not found
    ("CIFAR-10 is not in ./data")."""
    print(f"downloading {url} to {target}", file=sys.stderr)
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
            if (found := md5_of(tmp)) != md5:
                raise DataError(
                    f"the file downloaded from {url} has md5 {found}, expected {md5}, so it "
                    f"was not kept. {fix}"
                )
    except (OSError, urllib.error.URLError) as e:
        raise DataError(f"{missing} and downloading it failed ({e}). {fix}") from e
