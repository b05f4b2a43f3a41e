"""`keydesk backup FILE` and `keydesk restore FILE`: one archive holds a deployment's evidence.

The archive (tar + gzip, mode 0600) holds:

- ``manifest.json``: format, time, database kind and schema revision, whether secrets are inside;
- ``database/keydesk.sqlite`` (SQLite's online backup API: a consistent copy while the daemon
  writes) or ``database/keydesk.pgdump`` (``pg_dump --format=custom``, one snapshot);
- ``store/``: the raw mails and documents, named by their SHA-256;
- ``config/``: keydesk.toml, rules.toml, templates, trust;
- ``secrets.enc`` only with ``--with-secrets``: the key-encryption key, the audit key, the
  guarantor's signing key and the password files under the home, encrypted with a key derived
  from a passphrase (scrypt + Fernet). Without it, the restored desk needs those files put back
  by hand before it can show 認証キー or verify the audit trail.

Consistency: the database is copied first, the store after it. A mail's raw file is written (and
fsync'ed) before its row is committed, and stored files are only ever added (or removed by
`keydesk purge` for rows already marked purged), so every row in the copy finds its file.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy.engine import make_url

from foundation.errors import OperationalError, UsageProblem
from keydesk.database import current_revision, make_engine
from keydesk.settings import DEPLOYMENT_FILE, Settings, load_settings
from store.files import write_private

FORMAT = "keydesk-backup/1"
SECRETS_MAGIC = b"KDSEC1"
PG_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    database: str  # sqlite | postgresql
    revision: str | None
    stored_files: int
    secrets: int  # secret files inside (encrypted); 0 without --with-secrets


# -- secrets, encrypted with a passphrase -----------------------------------------------------------

def _fernet(passphrase: str, salt: bytes) -> Fernet:
    if len(passphrase) < 12:
        raise UsageProblem("バックアップのパスフレーズは 12 文字以上にしてください")
    key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_secrets(files: dict[str, bytes], passphrase: str) -> bytes:
    salt = os.urandom(16)
    plain = json.dumps({name: base64.b64encode(data).decode("ascii") for name, data in files.items()}).encode()
    return SECRETS_MAGIC + salt + _fernet(passphrase, salt).encrypt(plain)


def decrypt_secrets(blob: bytes, passphrase: str) -> dict[str, bytes]:
    if not blob.startswith(SECRETS_MAGIC):
        raise UsageProblem("secrets.enc: not a keydesk secrets file")
    salt, token = blob[len(SECRETS_MAGIC):len(SECRETS_MAGIC) + 16], blob[len(SECRETS_MAGIC) + 16:]
    try:
        plain = _fernet(passphrase, salt).decrypt(token)
    except InvalidToken:
        raise UsageProblem("バックアップのパスフレーズが違います (the secrets cannot be decrypted)") from None
    return {name: base64.b64decode(data) for name, data in json.loads(plain).items()}


def secret_files(settings: Settings) -> dict[str, Path]:
    """Every secret file of the deployment that lives under its home, by path relative to the home."""
    candidates = [settings.secrets.key_encryption_key_file, settings.secrets.audit_key_file,
                  settings.guarantor.signing_key, settings.smtp.password_file,
                  *(user.password_file for user in settings.embedded.users),
                  *(desk.mailbox.password_file for desk in settings.desks.values())]
    found: dict[str, Path] = {}
    for path in candidates:
        if path is None or not Path(path).is_file():
            continue
        try:
            relative = Path(path).resolve().relative_to(settings.home.resolve())
        except ValueError:
            continue  # outside the home (/etc/keydesk/…): the admin's own backup covers it
        found[relative.as_posix()] = Path(path)
    return found


# -- the database ------------------------------------------------------------------------------------

def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None


def _pg_command_env(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password (argv is visible to every user) and PGPASSWORD for it."""
    parsed = make_url(url).set(drivername="postgresql")
    env = {**os.environ}
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(password=None).render_as_string(hide_password=False), env


def _copy_database(url: str, folder: Path) -> tuple[str, Path]:
    sqlite_path = _sqlite_path(url)
    if sqlite_path is not None:
        target = folder / "keydesk.sqlite"
        source = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        destination = sqlite3.connect(target)
        try:
            with destination:
                source.backup(destination)  # a consistent snapshot, page by page, while others write
        finally:
            source.close()
            destination.close()
        return "sqlite", target
    target = folder / "keydesk.pgdump"
    dsn, env = _pg_command_env(url)
    _run_pg(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file", str(target), dsn], env)
    return "postgresql", target


def _run_pg(command: list[str], env: dict[str, str]) -> None:
    if shutil.which(command[0]) is None:
        raise OperationalError(f"{command[0]} is not installed (apt-get install postgresql-client)")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PG_TIMEOUT_SECONDS,
                            stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[:400]
        raise OperationalError(f"{command[0]} failed (exit {result.returncode}): {detail}")


# -- backup --------------------------------------------------------------------------------------------

def make_backup(settings: Settings, database_url: str, target: Path, *, passphrase: str | None) -> BackupSummary:
    """Write the archive to ``target`` (atomically, mode 0600). Secrets go in only with a passphrase."""
    target = target.expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".keydesk-backup-", dir=target.parent) as scratch:
        scratch_path = Path(scratch)
        kind, database_file = _copy_database(database_url, scratch_path)  # first: see the module docstring
        revision = current_revision(make_engine(f"sqlite:///{database_file}")) if kind == "sqlite" else \
            current_revision(make_engine(database_url))
        secrets = {name: path.read_bytes() for name, path in secret_files(settings).items()} if passphrase else {}
        manifest = {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(), "database": kind,
                    "revision": revision, "secrets": sorted(secrets), "storage": _relative_to_home(
                        settings.storage.directory, settings.home)}
        partial = scratch_path / "archive.tar.gz"
        stored = 0
        with tarfile.open(partial, "w:gz") as archive:
            _add_bytes(archive, "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1).encode())
            archive.add(database_file, f"database/{database_file.name}", recursive=False)
            stored = _add_tree(archive, settings.storage.directory, "store")
            _add_tree(archive, settings.config_dir, "config")
            if secrets:
                _add_bytes(archive, "secrets.enc", encrypt_secrets(secrets, passphrase or ""))
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    return BackupSummary(target, kind, revision, stored, len(secrets))


def _relative_to_home(path: Path, home: Path) -> str | None:
    try:
        return Path(path).resolve().relative_to(home.resolve()).as_posix()
    except ValueError:
        return None


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(datetime.now(timezone.utc).timestamp())
    archive.addfile(info, io.BytesIO(data))


def _add_tree(archive: tarfile.TarFile, folder: Path, prefix: str) -> int:
    count = 0
    if not Path(folder).is_dir():
        return count
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.startswith(".tmp"):
            archive.add(path, f"{prefix}/{path.relative_to(folder).as_posix()}", recursive=False)
            count += 1
    return count


# -- restore -------------------------------------------------------------------------------------------

def _safe_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for member in archive.getmembers():
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            raise UsageProblem(f"{member.name}: not a keydesk backup member (refusing to extract it)")
        members.append(member)
    return members


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def restore_backup(archive_path: Path, home: Path, *, passphrase: str | None, database_url: str | None = None) -> Settings:
    """Restore into ``home`` (absent or empty). ``database_url`` is the empty PostgreSQL database for
    a PostgreSQL backup (its config names it with url_env); SQLite goes where the config says."""
    home = home.expanduser().resolve()
    if not _is_empty(home):
        raise UsageProblem(f"{home} is not empty: restore only into an empty folder (nothing was changed)")
    try:
        archive = tarfile.open(archive_path, "r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise UsageProblem(f"{archive_path}: not a keydesk backup ({exc})") from None
    with archive:
        members = {member.name: member for member in _safe_members(archive)}
        if "manifest.json" not in members:
            raise UsageProblem(f"{archive_path}: not a keydesk backup (no manifest.json)")
        manifest = json.loads(archive.extractfile(members["manifest.json"]).read())
        if manifest.get("format") != FORMAT:
            raise UsageProblem(f"{archive_path}: unknown backup format {manifest.get('format')!r}")
        if manifest["secrets"] and not passphrase:
            raise UsageProblem("このバックアップには暗号化された秘密情報が含まれています: パスフレーズを指定してください")
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        _extract_prefix(archive, members, "config/", home / "config")
        if not (home / "config" / DEPLOYMENT_FILE).is_file():
            raise UsageProblem(f"{archive_path}: the backup holds no config/{DEPLOYMENT_FILE}")
        if manifest["secrets"]:
            secrets = decrypt_secrets(archive.extractfile(members["secrets.enc"]).read(), passphrase or "")
            for name, data in secrets.items():
                relative = PurePosixPath(name)
                if relative.is_absolute() or ".." in relative.parts:
                    raise UsageProblem(f"secrets.enc: {name}: not a path under the home")
                target = home / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(target.parent, 0o700)
                write_private(target, data, replace=False)
        settings = load_settings(home / "config")
        storage = settings.storage.directory
        if not _is_empty(storage):
            raise UsageProblem(f"storage.directory {storage} is not empty: restore needs an empty one")
        _extract_prefix(archive, members, "store/", storage)
        _restore_database(archive, members, manifest, database_url or settings.database_url())
    return settings


def _extract_prefix(archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], prefix: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, member in members.items():
        if not name.startswith(prefix) or not member.isfile():
            continue
        destination = target / PurePosixPath(name[len(prefix):])
        destination.parent.mkdir(parents=True, exist_ok=True)
        source = archive.extractfile(member)
        with open(destination, "wb") as handle:
            shutil.copyfileobj(source, handle)
        os.chmod(destination, 0o600)


def _restore_database(archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], manifest: dict, url: str) -> None:
    kind = manifest["database"]
    sqlite_path = _sqlite_path(url)
    if kind == "sqlite":
        if sqlite_path is None:
            raise UsageProblem("the backup holds a SQLite database but the restored config names PostgreSQL: "
                               "restore it with the config's SQLite url, then migrate")
        if sqlite_path.exists():
            raise UsageProblem(f"{sqlite_path} exists: restore needs an empty home")
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        with open(sqlite_path, "wb") as handle:
            shutil.copyfileobj(archive.extractfile(members["database/keydesk.sqlite"]), handle)
        os.chmod(sqlite_path, 0o600)
        return
    if sqlite_path is not None:
        raise UsageProblem("the backup holds a PostgreSQL dump: set the config's database.url_env to an empty "
                           "PostgreSQL database")
    if current_revision(make_engine(url)) is not None:
        raise UsageProblem("the PostgreSQL database is not empty: restore needs an empty database")
    with tempfile.TemporaryDirectory(prefix=".keydesk-restore-") as scratch:
        dump = Path(scratch) / "keydesk.pgdump"
        with open(dump, "wb") as handle:
            shutil.copyfileobj(archive.extractfile(members["database/keydesk.pgdump"]), handle)
        dsn, env = _pg_command_env(url)
        _run_pg(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--dbname", dsn, str(dump)], env)
