"""Signatures on the files of a results folder that decide what runs when it is resumed.

Resuming reads back files that drive execution: a run folder's ``config.yaml`` and a sweep's
saved sweep file name import paths (code, by design: a researcher's model or data), and Tune's
experiment state is a pickle. A results folder is data that others can change (shared
storage, a bucket, a folder copied from elsewhere), so each such file is signed when it is
written, with an HMAC-SHA256 under a key of this user's, and ``--resume`` (and the report
command) checks it before anything is parsed, unpickled or imported: a file that is not
signed, or was changed since, is one line naming it.

Why an HMAC under a per-user key: only someone holding the key can sign, and the key never
leaves the machines its owner copies it to. It is ``$FPZO_SIGNING_KEY_FILE``, by default
``~/.config/fpzo_ray/signing.key``, made on first use (32 random bytes) with mode 600, and
refused when others may read it. A sweep resumed on a new head (a lost one) needs the same
key there: a secret mounted on every head, named by ``FPZO_SIGNING_KEY_FILE``.

Each signed folder holds ``fpzo_signatures.json``: per file name, the HMACs of its last few
versions (Tune rewrites its state while a sweep runs, and a stop can fall between a new
version's upload and its signature). ``python -m fpzo_ray.signing FOLDER`` signs what a
folder holds as it is, for a folder one has checked oneself (one written before signatures
existed, say).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from fpzo_ray.artifacts import CONFIG_FILE, RUN_ID_FILE, SIGNATURES_FILE, SPEC_FILE, TRACKING_FILE
from fpzo_ray.config import ConfigError
from fpzo_ray.storage import Storage, open_storage

KEY_ENV = "FPZO_SIGNING_KEY_FILE"
#: Versions of a file whose signatures are kept (newest first).
KEEP_VERSIONS = 3


def key_file() -> Path:
    return Path(os.environ.get(KEY_ENV) or Path.home() / ".config" / "fpzo_ray" / "signing.key")


def signing_key() -> bytes:
    """This user's key, made (mode 600) when there is none; a key others may read is refused
    (whoever reads it can sign)."""
    path = key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_hex(32))
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"config error: {KEY_ENV}: the signing key {path} cannot be read ({exc.strerror})"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"config error: {KEY_ENV}: the signing key {path} may be read by others (mode "
            f"{stat.S_IMODE(mode):o}); make it private: chmod 600 {path}"
        )
    if len(text) < 32:
        raise ConfigError(f"config error: {KEY_ENV}: {path} holds no key (too short)")
    return text.encode()


def _digest(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _read(folder: Storage) -> dict[str, list[str]]:
    if not folder.exists(SIGNATURES_FILE):
        return {}
    try:
        signatures = json.loads(folder.read_text(SIGNATURES_FILE))
    except (OSError, ValueError):
        return {}  # unreadable: every file in the folder then reads as unsigned
    return signatures if isinstance(signatures, dict) else {}


def sign(folder: Storage | Path, names: Iterable[str]) -> list[str]:
    """Sign the current contents of ``names`` in ``folder`` (missing ones are skipped);
    returns the names whose contents were new."""
    folder = folder if isinstance(folder, Storage) else open_storage(folder)
    return _sign_contents(
        folder, {name: folder.read_bytes(name) for name in names if folder.exists(name)}
    )


def _sign_contents(folder: Storage, contents: dict[str, bytes]) -> list[str]:
    """Sign ``contents`` (file name: the bytes that were read) in ``folder``'s signatures;
    returns the names whose contents were new."""
    key = signing_key()
    signatures = _read(folder)
    changed = []
    for name, data in contents.items():
        digest = _digest(key, data)
        versions = [v for v in signatures.get(name, []) if isinstance(v, str)]
        if versions[:1] != [digest]:
            signatures[name] = [digest, *[v for v in versions if v != digest]][:KEEP_VERSIONS]
            changed.append(name)
    if changed:
        folder.write_text(SIGNATURES_FILE, json.dumps(signatures, indent=1, sort_keys=True))
    return changed


def verify(folder: Storage | Path, names: Iterable[str], what: str = "--resume") -> None:
    """Raise :class:`ConfigError` for the first of ``names`` in ``folder`` (missing ones are
    skipped) that this user's key did not sign as it is now."""
    folder = folder if isinstance(folder, Storage) else open_storage(folder)
    signatures = _read(folder)
    for name in names:
        if folder.exists(name) and not is_signed(folder, name, signatures):
            state = "was changed since it was signed" if name in signatures else "is not signed"
            raise ConfigError(
                f"config error: {what}: {folder.path_of(name)} {state} by this user's key "
                f"({key_file()}): it decides what runs, so it is not read. If you wrote or "
                f"checked this folder yourself: {sys.executable} -m fpzo_ray.signing "
                f"{folder.location}"
            )


def is_signed(folder: Storage, name: str, signatures: dict[str, list[str]] | None = None) -> bool:
    """Whether this user's key signed ``name`` in ``folder`` as it is now."""
    signatures = _read(folder) if signatures is None else signatures
    return _digest(signing_key(), folder.read_bytes(name)) in signatures.get(name, [])


#: Beside each of Tune's state files, its version in the last signed snapshot.
INTACT_SUFFIX = ".intact"
#: What a state file the last snapshot did not hold is renamed to when the snapshot is put
#: back (set aside, not deleted: neither Tune nor :func:`state_files` reads it).
SET_ASIDE_SUFFIX = ".unsigned"


def sign_tune_state(folder: Storage) -> None:
    """Snapshot Tune's state in a phase's ``folder``: each state file read once, signed, and
    a copy of it kept beside it. Tune rewrites its experiment state and its searcher's
    together and copies them to the storage in place, so a driver killed between Tune's save
    and the next snapshot leaves files newer than their signatures (or cut short, killed
    during the copy); resuming then puts the whole snapshot back
    (:func:`restore_intact_state`), never a mix of versions. A snapshot is taken only of
    complete files: while an experiment state is being written (its JSON does not parse
    yet), the next call takes it."""
    contents = {name: folder.read_bytes(name) for name in state_files(folder)}
    if not all(_complete(name, data) for name, data in contents.items()):
        return
    if _sign_contents(folder, contents):
        for name, data in contents.items():
            folder.write_bytes(name + INTACT_SUFFIX, data)


def restore_intact_state(folder: Storage) -> None:
    """When any state file of ``folder`` is cut short or not signed as it is now, put the
    last snapshot back whole (see :func:`sign_tune_state`): each file from its copy, and a
    file the snapshot did not hold set aside. Tune then resumes from a few seconds earlier,
    its trials from their checkpoints. The files are then checked as any file's."""
    names = state_files(folder)
    if not any(folder.exists(name + INTACT_SUFFIX) for name in names):
        return  # killed before the first snapshot: the check names the unsigned file
    signatures = _read(folder)
    if all(
        _complete(name, folder.read_bytes(name)) and is_signed(folder, name, signatures)
        for name in names
    ):
        return
    for name in names:
        if folder.exists(name + INTACT_SUFFIX):
            folder.write_bytes(name, folder.read_bytes(name + INTACT_SUFFIX))
        else:
            folder.write_bytes(name + SET_ASIDE_SUFFIX, folder.read_bytes(name))
            folder.delete(name)


def _complete(name: str, data: bytes) -> bool:
    """Whether ``data`` is a whole file: an experiment state (JSON) that parses; Tune's other
    state files (pickles, whatever their suffix) are written whole before they are copied."""
    if not name.startswith("experiment_state-"):
        return True
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


def state_files(folder: Storage) -> list[str]:
    """The files Tune keeps its experiment state in, at the top of a phase's folder
    (``tuner.pkl``, ``experiment_state-*.json``, its searcher's and callbacks' state)."""
    return sorted(
        name
        for name in folder.listdir()
        if name.endswith((".pkl", ".json")) and name != SIGNATURES_FILE
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m fpzo_ray.signing``."""
    parser = argparse.ArgumentParser(
        prog="python -m fpzo_ray.signing",
        description="Sign what each results folder holds as it is (a run folder, or a sweep's "
        "experiment folder and its phases), for a folder one has checked oneself.",
    )
    parser.add_argument(
        "folders", nargs="+", metavar="FOLDER", help="a results folder: a path or a storage URI"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fpzo_ray.signing FOLDER...``: sign what each folder holds as it is."""
    folders = build_parser().parse_args(argv).folders
    for location in folders:
        folder = open_storage(location, "FOLDER")
        driver_files = [CONFIG_FILE, RUN_ID_FILE, SPEC_FILE, TRACKING_FILE]
        sign(folder, driver_files + state_files(folder))
        for phase in ("grid", "search", "repeat"):
            if folder.exists(phase):
                sign(folder.child(phase), state_files(folder.child(phase)))
        print(f"signed {folder.location}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
