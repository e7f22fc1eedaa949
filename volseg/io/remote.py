"""Volumes by URL: ``http(s)://``, ``s3://``, ``gs://`` and ``file://`` through fsspec and Zarr.

:func:`zarr_store` turns a URL into a Zarr store (zarr's ``FsspecStore``) wrapped in
:class:`RemoteStore`, which adds

* **retries**: transient faults (HTTP 5xx, 408/429, timeouts, dropped or refused connections)
  are retried with exponential backoff (``VOLSEG_RETRIES`` times, default 4, from 0.1 s); the
  last failure becomes ``error: URL: ...``. Retries are logged on the ``volseg.remote`` logger
  (shown with ``--debug``). Permanent answers (403, other 4xx) fail at once;
* **a bounded on-disk read cache** (:class:`volseg.io.diskcache.DiskCache`, ``--cache DIR`` or
  ``VOLSEG_CACHE``, ``--cache-size`` / ``VOLSEG_CACHE_SIZE``, default 20 GiB): chunk objects
  (never metadata) are kept by URL + chunk key + a digest of their array's metadata, so a
  rerun, a second ``--part`` or a second pass fetches nothing but metadata. Chunks the store
  does not have (the fill value) are remembered as absent too.

Options reach every process of a run through the environment (``VOLSEG_STORAGE_OPTIONS``,
``VOLSEG_CACHE``, ``VOLSEG_CACHE_SIZE``; see :func:`configure`), so Dask workers started by
volseg read the bucket themselves with the same settings. Credentials come from the standard
places (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``
for an S3-compatible server); S3 access is anonymous where there are none.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os

from zarr.storage import FsspecStore, WrapperStore

from volseg.errors import VolsegError

SCHEMES = ("http://", "https://", "s3://", "gs://", "gcs://", "file://")
METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")
ENV_OPTIONS, ENV_CACHE, ENV_CACHE_SIZE, ENV_RETRIES = (
    "VOLSEG_STORAGE_OPTIONS", "VOLSEG_CACHE", "VOLSEG_CACHE_SIZE", "VOLSEG_RETRIES")
log = logging.getLogger("volseg.remote")


def is_url(path) -> bool:
    """True when ``path`` is a URL volseg reads through fsspec (not a local path)."""
    return isinstance(path, str) and path.lower().startswith(SCHEMES)


def join(url: str, *parts: str) -> str:
    """``url/part/...`` without doubled slashes."""
    return "/".join([url.rstrip("/")] + [p.strip("/") for p in parts if p and p.strip("/")])


def parent(url: str) -> tuple[str, str]:
    """(parent URL, last path component) of ``url``."""
    head, _, tail = url.rstrip("/").rpartition("/")
    return head, tail


def volume_key(path) -> str:
    """Identifies a volume's content in the per-process chunk cache: the URL, or a local
    path with its modification time."""
    if is_url(path):
        return path.rstrip("/")
    return f"{os.path.abspath(path)}@{os.stat(path).st_mtime_ns}"


def parse_storage_options(text) -> dict:
    """``--storage-options``: a JSON object (or a dict) of fsspec options."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise VolsegError("--storage-options", f"is not valid JSON ({exc}); e.g. "
                          "'{\"endpoint_url\": \"http://127.0.0.1:9000\"}'") from None
    if not isinstance(value, dict):
        raise VolsegError("--storage-options", f"must be a JSON object, got {text!r}")
    return value


def configure(*, storage_options=None, cache=None, cache_size=None, inputs=(), outputs=()) -> None:
    """Set the remote options for this process and the worker processes it starts (env).

    Parameters
    ----------
    storage_options : str or dict, optional
        fsspec options (JSON text or dict), merged into every URL's options.
    cache : path, optional
        Folder of the on-disk read cache of fetched chunks (default: ``VOLSEG_CACHE``). It is
        checked before any work: it must not be, contain or lie inside one of ``inputs`` or
        ``outputs``, and must be a volseg cache, an empty folder or a new one
        (:func:`volseg.io.diskcache.claim` writes the marker).
    cache_size : str or int, optional
        Cache bound (``20GiB``, ``500MB``, bytes).
    inputs, outputs : iterable of paths
        The command's inputs (the run directory included) and outputs, kept out of the cache
        (flat lists; None entries are skipped).

    Raises
    ------
    VolsegError
        A bad option, or a cache folder volseg must not evict files from.
    """
    from volseg.io.diskcache import check_place, claim, parse_size

    if storage_options is not None:
        os.environ[ENV_OPTIONS] = json.dumps(parse_storage_options(storage_options))
    if cache_size is not None:
        os.environ[ENV_CACHE_SIZE] = str(parse_size(cache_size, name="--cache-size"))
    if cache is not None and not os.fspath(cache).strip():
        raise VolsegError("--cache", "is empty; give a folder for the read cache (an unset shell variable?)")
    root, option = (cache, "--cache") if cache is not None else (os.environ.get(ENV_CACHE) or None, ENV_CACHE)
    if root is None:
        return
    from volseg.io.identity import local_path

    root = os.path.abspath(os.path.expanduser(local_path(os.fspath(root))))  # file://: the local folder
    check_place(root, inputs=inputs, outputs=outputs, option=option)
    claim(root, option=option)
    os.environ[ENV_CACHE] = root


def storage_options(url: str, extra: dict | None = None) -> dict:
    """fsspec options for ``url``: ``VOLSEG_STORAGE_OPTIONS``, ``extra``, and the defaults of
    its protocol (S3 endpoint from ``AWS_ENDPOINT_URL``, anonymous without credentials; HTTP
    connect/read timeouts)."""
    opts = parse_storage_options(os.environ.get(ENV_OPTIONS) or None)
    opts.update(extra or {})
    scheme = url.split("://", 1)[0].lower()
    if scheme == "s3":
        if "endpoint_url" not in opts and os.environ.get("AWS_ENDPOINT_URL"):
            opts["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
        if "anon" not in opts and "key" not in opts and not _aws_credentials():
            opts["anon"] = True
    elif scheme in ("http", "https"):
        import aiohttp

        kwargs = dict(opts.get("client_kwargs") or {})
        kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60))
        opts["client_kwargs"] = kwargs
    return opts


def _aws_credentials() -> bool:
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    try:
        import botocore.session

        return botocore.session.Session().get_credentials() is not None
    except Exception:
        return False


def filesystem(url: str, extra: dict | None = None):
    """(fsspec filesystem, path inside it) for ``url``."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **storage_options(url, extra))
    except ImportError as exc:
        raise VolsegError(url, f"needs an optional package ({exc}); pip install 'volseg[remote]'") from None


def zarr_store(path, *, mode: str = "r", extra: dict | None = None):
    """What ``zarr.open*`` takes for ``path``: the local path as a string, or for a URL a
    :class:`RemoteStore` (read-only unless ``mode`` writes; the disk cache only when reading)."""
    if not is_url(path):
        return os.fspath(path)
    url = path.rstrip("/")
    read_only = mode == "r"
    try:
        store = FsspecStore.from_url(url, storage_options=storage_options(url, extra), read_only=read_only)
    except ImportError as exc:
        raise VolsegError(url, f"needs an optional package ({exc}); pip install 'volseg[remote]'") from None
    except ValueError as exc:
        raise VolsegError(url, f"is not a usable URL ({exc})") from None
    return RemoteStore(store, url=url, cache=_cache_from_env() if read_only else None)


def _cache_from_env():
    root = os.environ.get(ENV_CACHE)
    if not root:
        return None
    from volseg.io.diskcache import DEFAULT_SIZE, DiskCache

    return DiskCache(root, int(os.environ.get(ENV_CACHE_SIZE) or DEFAULT_SIZE))


def _retries() -> int:
    try:
        return max(0, int(os.environ.get(ENV_RETRIES, "4")))
    except ValueError:
        return 4


def transient(exc: BaseException) -> bool:
    """Whether a failed request is worth retrying (5xx, 408/429, timeouts, connection faults)."""
    if isinstance(exc, (VolsegError, PermissionError, FileNotFoundError)):
        return False
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    try:
        import aiohttp

        if isinstance(exc, aiohttp.ClientError):
            return True
    except ImportError:
        pass
    return isinstance(exc, OSError)


def describe(exc: BaseException) -> str:
    """One line about a failed request."""
    status = getattr(exc, "status", None)
    if isinstance(exc, PermissionError) or status == 403:
        return "access denied (403); check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID) or --storage-options"
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:300]


def _closing(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while its coroutine was being closed (``GeneratorExit`` or a
    cancellation in its context chain): zarr abandons the other requests of a batch once one has
    failed, and the client's clean-up then fails in the interpreter's last collection."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
            return True
        exc, seen = exc.__context__, seen + 1
    return False


class RemoteStore(WrapperStore):
    """A Zarr store over fsspec with retries and an optional on-disk cache of chunk objects.

    Parameters
    ----------
    store : zarr.storage.FsspecStore
        The wrapped store.
    url : str
        Its URL (cache key and error messages).
    cache : volseg.io.diskcache.DiskCache, optional
        Read cache of chunk objects (metadata is always fetched).
    """

    def __init__(self, store, *, url: str = "", cache=None):
        super().__init__(store)
        self.url = url
        self.cache = cache
        self._meta: dict = {}

    def _with_store(self, store):
        return type(self)(store, url=self.url, cache=self.cache)

    def __getstate__(self):
        return {"_store": self._store, "url": self.url, "cache": self.cache, "_meta": dict(self._meta)}

    def __setstate__(self, state):
        self.__dict__.update(state)

    async def _ident(self, key: str, prototype) -> str:
        """Cache identity of a chunk: URL, key and the digest of its array's metadata document
        (so a rewritten array with other metadata is never served from stale entries)."""
        parts = key.split("/")[:-1]
        for i in range(len(parts), -1, -1):
            prefix = "/".join(parts[:i])
            if prefix not in self._meta:  # threads racing here compute the same value
                digest = None
                for name in ("zarr.json", ".zarray"):
                    doc = await self._fetch(f"{prefix}/{name}" if prefix else name, prototype, None)
                    if doc is not None:
                        digest = hashlib.sha256(doc.to_bytes()).hexdigest()[:16]
                        break
                self._meta[prefix] = digest
            if self._meta[prefix] is not None:
                return f"{self.url}/{key}#{self._meta[prefix]}"
        return f"{self.url}/{key}#"

    async def get(self, key, prototype, byte_range=None):
        is_meta = key.rsplit("/", 1)[-1] in METADATA
        cache = self.cache if byte_range is None and not is_meta else None
        if cache is None:
            return await self._fetch(key, prototype, byte_range)
        ident = await self._ident(key, prototype)
        hit = cache.get(ident)
        if hit is not None:
            return None if hit is cache.ABSENT else prototype.buffer.from_bytes(hit)
        value = await self._fetch(key, prototype, byte_range)
        cache.put(ident, None if value is None else value.to_bytes())
        return value

    async def _fetch(self, key, prototype, byte_range):
        retries = _retries()
        for attempt in range(retries + 1):
            try:
                return await self._store.get(key, prototype, byte_range)
            except Exception as exc:
                if _closing(exc):  # the request was abandoned (another one failed first): no error
                    raise GeneratorExit from None
                url = join(self.url, key)
                if not transient(exc):
                    raise VolsegError(url, describe(exc)) from None
                if attempt == retries:
                    raise VolsegError(url, f"failed after {retries + 1} tries: {describe(exc)}") from None
                delay = 0.1 * 2 ** attempt
                log.info("retry %d/%d of %s in %.1f s after %s", attempt + 1, retries, url, delay, describe(exc))
                await asyncio.sleep(delay)
        return None

    async def set(self, key, value):
        retries = _retries()
        for attempt in range(retries + 1):
            try:
                return await self._store.set(key, value)
            except Exception as exc:
                url = join(self.url, key)
                if not transient(exc) or attempt == retries:
                    raise VolsegError(url, f"cannot be written: {describe(exc)}") from None
                log.info("retry %d/%d of writing %s after %s", attempt + 1, retries, url, describe(exc))
                await asyncio.sleep(0.1 * 2 ** attempt)


def open_node(path, *, mode: str = "r"):
    """``zarr.open`` of a local path or URL; a URL without Zarr metadata is a clear error."""
    import warnings

    import zarr

    with warnings.catch_warnings(record=True) as seen:  # zarr's guesses about a store that fails
        warnings.simplefilter("always")
        try:
            node = zarr.open(store=zarr_store(path, mode=mode), mode=mode)
        except VolsegError:
            raise
        except Exception as exc:
            if is_url(path) and (isinstance(exc, (FileNotFoundError, KeyError)) or "not found" in str(exc).lower()):
                raise VolsegError(path, "has no Zarr metadata (zarr.json, .zgroup or .zarray): the URL does "
                                  "not exist or is not a Zarr store; check the URL") from None
            if is_url(path) and isinstance(exc, json.JSONDecodeError):
                raise VolsegError(path, "answers for its Zarr metadata (zarr.json, .zarray) with something "
                                  "that is not JSON (a web page?): the URL is not a Zarr store; check the URL") from None
            raise VolsegError(path, f"is not a readable Zarr store ({type(exc).__name__}: {exc})") from None
    for w in seen:  # the store opened: pass zarr's warnings on as they were
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return node
