"""Download and verify the public data the plugin offers (:class:`Remote`).

Two sets of files, each pinned to an upstream commit: the blood-cell dataset
(Zheng et al. 2018, Dataset 1; :data:`BLOODCELLS`) and a few whole smear
fields of another microscope (BCCD; :data:`SMEAR_FIELDS`). Every file is
checked against a SHA-256 registry shipped with the package. pooch downloads
into a temporary file and only moves it into the cache once the hash matches,
so a partial or tampered file is never used.

Environment variables override the defaults:

``NAPARI_BLOODCELLS_DATA_URL``
    Base URL of the blood-cell dataset (``http(s)://...``), or a local folder
    holding a copy of it (``Dataset 1/001.bmp``, ...).
``NAPARI_BLOODCELLS_SMEAR_URL``
    The same for the smear fields: BCCD's ``BCCD/`` folder
    (``JPEGImages/``, ``Annotations/``) or a mirror of it.
``NAPARI_BLOODCELLS_CACHE``
    Folder where downloaded files are kept.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from urllib.parse import quote

import pooch

from napari_bloodcells.errors import DownloadError

UPSTREAM_URL = (
    "https://raw.githubusercontent.com/zxaoyou/segmentation_WBC/"
    "fa9c01622f52bccb9aeb8a6f2628f564e377767d/"
)
URL_ENV = "NAPARI_BLOODCELLS_DATA_URL"
CACHE_ENV = "NAPARI_BLOODCELLS_CACHE"
RAW_FOLDER = "segmentation_WBC"
SMEAR_URL = (
    "https://raw.githubusercontent.com/Shenggan/BCCD_Dataset/"
    "d272fb14cdff6e473fafeeeba32aba5f560e9e43/BCCD/"
)
SMEAR_URL_ENV = "NAPARI_BLOODCELLS_SMEAR_URL"


@dataclass(frozen=True)
class Remote:
    """A set of public files the plugin downloads: where from, which, and how to override.

    Attributes
    ----------
    title : str
        How messages name it, e.g. "the blood-cell dataset".
    upstream : str
        Base URL at a pinned commit.
    registry_file : str
        The package's ``<sha256> <relative path>`` list of its files.
    folder : str
        Its folder in the cache.
    url_env : str
        The environment variable that points at a mirror or a local copy.
    """

    title: str
    upstream: str
    registry_file: str
    folder: str
    url_env: str


BLOODCELLS = Remote("the blood-cell dataset", UPSTREAM_URL, "registry.txt", RAW_FOLDER, URL_ENV)
SMEAR_FIELDS = Remote(
    "the smear-field sample (BCCD)", SMEAR_URL, "smear_registry.txt", "BCCD", SMEAR_URL_ENV
)
_PARALLEL_DOWNLOADS = 8
_RETRIES = 2
"""Retries per file once the source has answered (pooch waits 1 s, then 2 s)."""
_TIMEOUT_S = 15
"""Seconds without an answer before a request fails."""

Progress = Callable[[int, int], None]
"""Called with (files done, files total) while fetching."""


def registry(remote: Remote = BLOODCELLS) -> dict[str, str]:
    """Map each of ``remote``'s files' relative path to its ``sha256:`` hash.

    Returns
    -------
    dict
        ``{"Dataset 1/001.bmp": "sha256:...", ...}``.
    """
    text = files("napari_bloodcells.core.data").joinpath(remote.registry_file).read_text("utf-8")
    entries = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(" ", 1)
            entries[name] = f"sha256:{digest}"
    return entries


def data_source(remote: Remote = BLOODCELLS) -> str:
    """The base URL or local folder of ``remote``, honouring its environment variable."""
    return os.environ.get(remote.url_env) or remote.upstream


def cache_dir() -> Path:
    """The folder for downloaded and converted data, honouring ``NAPARI_BLOODCELLS_CACHE``."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(pooch.os_cache("napari-bloodcells"))


def _is_url(source: str) -> bool:
    return source.split("://", 1)[0].lower() in {"http", "https", "ftp"}


def fetch_raw(
    source: str | None = None,
    cache: Path | None = None,
    progress: Progress | None = None,
    remote: Remote = BLOODCELLS,
) -> Path:
    """Download (or copy) and verify every file of ``remote`` (the blood-cell dataset).

    Parameters
    ----------
    source : str, optional
        Base URL or local folder; defaults to :func:`data_source`.
    cache : Path, optional
        Cache folder; defaults to :func:`cache_dir`.
    progress : callable, optional
        Called as ``progress(done, total)`` after each file.
    remote : Remote
        Which files: :data:`BLOODCELLS` or :data:`SMEAR_FIELDS`.

    Returns
    -------
    Path
        The folder holding the files at their relative paths (for the
        blood-cell dataset ``Dataset 1/NNN.bmp`` and ``Dataset 1/NNN.png``).

    Raises
    ------
    DownloadError
        If a file cannot be fetched or its checksum does not match.
    """
    source = source or data_source(remote)
    target = (cache or cache_dir()) / remote.folder
    entries = registry(remote)
    try:
        # Made up front: pooch's own makedirs races when several files download at once.
        for folder in {(target / name).parent for name in entries}:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"Cannot create the data folder {target} ({exc.strerror}); "
            f"set {CACHE_ENV} to a writable folder."
        ) from exc
    names = sorted(entries)
    failed = _Failure(remote, source)
    if _is_url(source):
        fetch_one = _url_fetcher(source, target, entries, failed, names[0])
    else:
        fetch_one = _folder_fetcher(source, target, entries, remote)
    done = 0
    with _quiet_pooch(), ThreadPoolExecutor(_PARALLEL_DOWNLOADS) as pool:
        futures = [pool.submit(failed.explain, fetch_one, name) for name in names]
        try:
            for future in futures:
                future.result()
                done += 1
                if progress is not None:
                    progress(done, len(names))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return target


def _url_fetcher(
    source: str, target: Path, entries: dict[str, str], failed: _Failure, first: str
) -> Callable[[str], str]:
    """Fetch files from a URL with pooch; the first file is tried at once, with one retry."""
    base = source if source.endswith("/") else source + "/"
    urls = {name: base + quote(name) for name in entries}
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=_TIMEOUT_S)

    def getter(retries: int) -> pooch.Pooch:
        return pooch.create(
            path=target, base_url=base, registry=entries, urls=urls, retry_if_failed=retries
        )

    # One file first, with one retry: an unreachable host fails in seconds
    # with one sentence instead of a minute of retries for every file.
    with _quiet_pooch():
        failed.explain(lambda name: str(getter(1).fetch(name, downloader=downloader)), first)
    return lambda name: str(getter(_RETRIES).fetch(name, downloader=downloader))


def _folder_fetcher(
    source: str, target: Path, entries: dict[str, str], remote: Remote
) -> Callable[[str], str]:
    """Copy files from a local folder, each verified against the registry."""
    folder = Path(source.removeprefix("file://"))
    if not folder.is_dir():
        raise DownloadError(
            f"The source of {remote.title}, {source!r}, is neither a URL nor an existing "
            f"folder; set {remote.url_env} to its URL or to a folder holding a copy of it."
        )
    return lambda name: _copy_verified(folder / name, target / name, entries[name])


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Keep pooch's per-file lines off the terminal; progress and errors are ours to report."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class _Failure:
    """Turns what went wrong fetching one of ``remote``'s files into one sentence."""

    remote: Remote
    source: str

    def explain(self, fetch_one: Callable[[str], str], name: str) -> str:
        try:
            return fetch_one(name)
        except DownloadError:
            raise
        except ValueError as exc:  # pooch's checksum mismatch
            raise DownloadError(
                f"The downloaded file {name!r} does not match its known checksum, so it was "
                f"discarded; the source {self.source} serves a different or damaged copy."
            ) from exc
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOSPC:
                raise DownloadError(
                    f"The disk is full while saving {name!r}; free some space or set "
                    f"{CACHE_ENV} to a folder on a larger disk."
                ) from exc
            raise DownloadError(self.offline(name, exc)) from exc
        except Exception as exc:  # requests' errors do not share a base with OSError everywhere
            raise DownloadError(self.offline(name, exc)) from exc

    def offline(self, name: str, exc: BaseException) -> str:
        return (
            f"Could not download {self.remote.title} (file {name!r} from {self.source}: "
            f"{type(exc).__name__}); check the network, or point the plugin at a local copy "
            f"by setting {self.remote.url_env} to its folder or URL."
        )


def _copy_verified(src: Path, dst: Path, known_hash: str) -> str:
    algorithm, digest = known_hash.split(":", 1)
    if dst.is_file() and pooch.file_hash(str(dst), alg=algorithm) == digest:
        return str(dst)
    if not src.is_file():
        raise DownloadError(
            f"The local dataset copy has no file {src.name!r} (looked in {src.parent}); "
            "point the plugin at a complete copy."
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".part-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if pooch.file_hash(tmp, alg=algorithm) != digest:
            raise ValueError("checksum mismatch")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(dst)
