"""Where a sweep's trials and a run's folder persist: a local folder, a path every node mounts,
or a URI that pyarrow's filesystems understand.

On one machine the default, ``<results-dir>/ray_results``, is right. On a cluster whose nodes
share no disk a trial runs on whichever node has room, and since Ray 2.7 Tune no longer copies
trial folders to the head: every trial's checkpoints, its configuration, pruned model and
client records must go to storage that every node reaches, and the driver reads them back from
there (to log them to MLflow, draw figures, build the report, resume on a fresh head).

``--storage`` (or ``storage:`` in a sweep file, or ``FPZO_STORAGE``) names it:

* a path: an NFS or EFS mount, a Kubernetes volume, the same path on every node;
* ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hdfs://...``: a bucket. For an
  S3-compatible store (MinIO, Ceph) the endpoint goes in the URI the way pyarrow reads it
  (``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``) or in the standard
  ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables; credentials come from each node's
  usual AWS variables or its instance role.

A :class:`Storage` is picklable (its filesystem travels with it, endpoint included), so the
probe tasks and trials on other nodes use exactly what the driver resolved.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fpzo_ray.config import ConfigError

#: The environment variable that names the storage when no option or sweep-file key does.
STORAGE_ENV = "FPZO_STORAGE"
#: What a storage that nothing named is called in messages: a folder of the results folder.
DEFAULT_OPTION = "--storage (default: --results-dir)"


@dataclass(frozen=True)
class Storage:
    """A folder on a filesystem: ``location`` is what a user reads and passes back
    (``--resume``), ``filesystem`` and ``root`` are what pyarrow writes through; ``option``
    names the setting it came from, for error messages."""

    location: str
    filesystem: Any  # pyarrow.fs.FileSystem
    root: str
    option: str = "--storage"

    @property
    def is_local(self) -> bool:
        """True when this is a folder of this machine's own filesystem (a shared mount counts:
        whether other nodes see it is what :func:`fpzo_ray.cluster_checks` probes)."""
        import pyarrow.fs

        return isinstance(self.filesystem, pyarrow.fs.LocalFileSystem)

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.location} is not a local path")
        return Path(self.root)

    @property
    def name(self) -> str:
        return posixpath.basename(self.root.rstrip("/"))

    def child(self, *parts: str) -> Storage:
        """The folder ``parts`` below this one."""
        return Storage(
            _join_location(self.location, *parts),
            self.filesystem,
            posixpath.join(self.root, *parts),
            self.option,
        )

    def parent(self) -> Storage:
        root = posixpath.dirname(self.root.rstrip("/"))
        split = urlsplit(self.location) if "://" in self.location else None
        if split is None:
            location = str(Path(self.location).parent)
        else:
            location = urlunsplit(split._replace(path=posixpath.dirname(split.path.rstrip("/"))))
        return Storage(location, self.filesystem, root, self.option)

    # -- files ---------------------------------------------------------------------------
    def path_of(self, name: str = "") -> str:
        return posixpath.join(self.root, name) if name else self.root

    def exists(self, name: str = "") -> bool:
        import pyarrow.fs

        info = self.filesystem.get_file_info(self.path_of(name))
        return info.type != pyarrow.fs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes:
        with self.filesystem.open_input_stream(self.path_of(name)) as stream:
            return bytes(stream.readall())

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self.path_of(name)
        self.filesystem.create_dir(posixpath.dirname(path), recursive=True)
        with self.filesystem.open_output_stream(path) as stream:
            stream.write(data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def delete(self, name: str = "") -> None:
        """Remove ``name`` (a file or a folder with all it holds), if it is there."""
        import pyarrow.fs

        info = self.filesystem.get_file_info(self.path_of(name))
        if info.type == pyarrow.fs.FileType.Directory:
            self.filesystem.delete_dir(info.path)
        elif info.type != pyarrow.fs.FileType.NotFound:
            self.filesystem.delete_file(info.path)

    def upload(self, source: Path, name: str = "") -> None:
        """Copy the local file or folder ``source`` to ``name`` here (a folder's content goes
        into ``name``). Nothing to do where ``source`` already is that place."""
        import pyarrow.fs

        target = self.path_of(name)
        if self.is_local and Path(target).resolve() == source.resolve():
            return
        if source.is_dir():
            self.filesystem.create_dir(target, recursive=True)
        else:
            self.filesystem.create_dir(posixpath.dirname(target), recursive=True)
        pyarrow.fs.copy_files(
            str(source),
            target,
            source_filesystem=pyarrow.fs.LocalFileSystem(),
            destination_filesystem=self.filesystem,
        )

    def download(self, local: Path, names: Iterable[str] | None = None) -> list[str]:
        """Copy the files of this folder to ``local``: those of ``names`` that exist, or, with
        none named, every file directly in it (not its subfolders). Returns what was copied."""
        import pyarrow.fs

        local.mkdir(parents=True, exist_ok=True)
        if names is None:
            found = self.filesystem.get_file_info(pyarrow.fs.FileSelector(self.root))
            files = [f for f in found if f.type == pyarrow.fs.FileType.File]
            names = [posixpath.basename(f.path) for f in files]
        copied = []
        for name in names:
            if self.exists(name):
                (local / name).write_bytes(self.read_bytes(name))
                copied.append(name)
        return copied

    def listdir(self, name: str = "") -> list[str]:
        """Names directly in ``name`` (empty when it is not there)."""
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.path_of(name), allow_not_found=True)
        return sorted(posixpath.basename(f.path) for f in self.filesystem.get_file_info(selector))


def _join_location(location: str, *parts: str) -> str:
    """``location`` with ``parts`` appended to its path (before a URI's query string)."""
    if "://" not in location:
        return str(Path(location).joinpath(*parts))
    split = urlsplit(location)
    return urlunsplit(split._replace(path=posixpath.join(split.path or "/", *parts)))


def _s3_endpoint_from_environment(location: str) -> str:
    """An ``s3://`` URI with the endpoint of ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
    added as pyarrow's ``endpoint_override`` and ``scheme``, unless the URI names one."""
    split = urlsplit(location)
    query = dict(parse_qsl(split.query))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if split.scheme != "s3" or not endpoint or "endpoint_override" in query:
        return location
    parsed = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    query.setdefault("endpoint_override", parsed.netloc)
    query.setdefault("scheme", parsed.scheme)
    return urlunsplit(split._replace(query=urlencode(query)))


def open_storage(location: str | os.PathLike[str], option: str = "--storage") -> Storage:
    """The :class:`Storage` that ``location`` names; a value pyarrow cannot use is a
    :class:`ConfigError` naming ``option``. A local path is made absolute (never created)."""
    import pyarrow
    import pyarrow.fs

    text = os.fspath(location)
    if not text.strip():
        raise ConfigError(f"config error: {option}: empty; name a path or a URI (s3://...)")
    if "://" not in text or text.startswith("file://"):
        path = Path(urlsplit(text).path if text.startswith("file://") else text).expanduser()
        absolute = str(path.resolve())
        return Storage(absolute, pyarrow.fs.LocalFileSystem(), absolute, option)
    try:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(_s3_endpoint_from_environment(text))
    except (pyarrow.ArrowException, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"config error: {option}: {text} is not a storage pyarrow can open ({reason}); "
            "name a path every node mounts, or s3://bucket/prefix, gs://bucket/prefix"
        ) from None
    return Storage(text, filesystem, root.rstrip("/"), option)


def resolve_storage(option_value: str | None, sweep_value: str | None, default: Path) -> Storage:
    """The storage a sweep or run uses: ``--storage``, else the sweep file's ``storage:``,
    else ``FPZO_STORAGE``, else ``default``, a folder of the results folder (right on one
    machine)."""
    if option_value:
        return open_storage(option_value, "--storage")
    if sweep_value:
        return open_storage(sweep_value, "storage (sweep file)")
    if os.environ.get(STORAGE_ENV):
        return open_storage(os.environ[STORAGE_ENV], STORAGE_ENV)
    return open_storage(default, DEFAULT_OPTION)


def open_resumed(location: str, marker: str, what: str, storage_option: str | None) -> Storage:
    """The folder ``--resume`` names (a path or a URI), which must hold ``marker`` (``what``
    says what it should be, for the message); ``--storage`` beside it is refused, the folder
    staying where it is."""
    if storage_option:
        raise ConfigError(
            f"config error: --storage: a resumed {what} stays where it is (--resume names its "
            "folder); leave --storage out"
        )
    storage = open_storage(location, "--resume")
    try:
        found = storage.exists(marker)
    except OSError as exc:
        raise ConfigError(f"config error: --resume: {location} cannot be read ({exc})") from None
    if not found:
        raise ConfigError(
            f"config error: --resume: {location} is not a {what} folder (no {marker})"
        )
    return storage


def check_writable(storage: Storage) -> None:
    """Write, read back and remove a file, before any work: a folder that cannot be made, a
    bucket that does not exist or refuses the credentials is one line naming the option.
    The default storage, a folder of the results folder, is checked with it (nothing here)."""
    if storage.option == DEFAULT_OPTION:
        return
    probe = f".fpzo_write_test_{os.getpid()}"
    try:
        storage.write_text(probe, "ok")
        if storage.read_text(probe) != "ok":
            raise OSError("a file written there reads back different")
        storage.delete(probe)
    except (OSError, ValueError) as exc:  # pyarrow raises OSError subclasses
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"config error: {storage.option}: {storage.location}: cannot be written ({reason})"
        ) from None


class LocalCopy:
    """A local working folder of a storage folder: the driver writes its own files here
    (sweep file, tables, report) and :meth:`push` copies them there. Where the storage is
    this folder (a local or mounted path), pushing is nothing."""

    def __init__(self, storage: Storage, local: Path) -> None:
        self.storage = storage
        self.path = storage.local_path if storage.is_local else local
        self.path.mkdir(parents=True, exist_ok=True)

    def push(self, *names: str, drop_missing: str = "") -> None:
        """Copy the named files or folders (default: everything here) to the storage; then
        remove there what starts with ``drop_missing`` and is no longer here (old
        checkpoints)."""
        if self.storage.is_local:
            return
        if not names:
            self.storage.upload(self.path)
        for name in names:
            if (self.path / name).exists():
                self.storage.upload(self.path / name, name)
        if drop_missing:
            for name in self.storage.listdir():
                if name.startswith(drop_missing) and not (self.path / name).exists():
                    self.storage.delete(name)

    def pull(self, names: Iterable[str] | None = None, recursive: bool = False) -> None:
        """Copy the storage folder's own files here (``recursive``: its subfolders too): a
        resumed sweep or run on a fresh head reads what the first one wrote."""
        if self.storage.is_local:
            return
        if recursive:
            import pyarrow.fs

            pyarrow.fs.copy_files(
                self.storage.root,
                str(self.path),
                source_filesystem=self.storage.filesystem,
                destination_filesystem=pyarrow.fs.LocalFileSystem(),
            )
            return
        self.storage.download(self.path, names)


def folder_on(filesystem: Any, path: str) -> Storage:
    """The folder ``path`` of ``filesystem``, as Tune names a trial's (``trial.path``,
    ``result.path``, with the storage's filesystem)."""
    return Storage(path, filesystem, path)
