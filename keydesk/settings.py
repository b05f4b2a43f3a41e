"""Load and validate the deployment: config/keydesk.toml + config/rules.toml.

The deployment home is the folder that holds the config folder; relative paths resolve against
it, so ``var/`` sits beside ``config/``. Secrets are never read from the TOML: only the names of
environment variables and files that hold them (resolved when a command needs them).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from console.settings import ConsoleSettings
from guarantor.settings import GuarantorSettings
from intake.lookup_settings import LookupSettings
from intake.settings import Limits, MailboxSettings, PollSettings
from mailer.settings import DigestSettings, OutboxSettings, SmtpSettings
from foundation.config import ConfigError, HomePath, StrictModel, TimeZoneName, describe_errors
from rules.schema import RuleSet

CONFIG_ENV = "KEYDESK_CONFIG"
DEPLOYMENT_FILE = "keydesk.toml"
RULES_FILE = "rules.toml"


class DatabaseSettings(StrictModel):
    # Any SQLAlchemy URL. A relative SQLite path is relative to the deployment home.
    url: str = "sqlite:///var/keydesk.db"
    # Take the whole URL from this environment variable instead (it may carry a password).
    url_env: str | None = None


class StorageSettings(StrictModel):
    # Raw mails and extracted files, stored by content hash.
    directory: HomePath = "var/store"
    # "files" under the directory above, or "database" (the stored_blob table): choose "database"
    # when several keydesk workers on different machines share one PostgreSQL database.
    backend: Literal["files", "database"] = "files"


class SecretsSettings(StrictModel):
    # The Fernet key that encrypts 認証キー values at rest: from the environment, else the file.
    key_encryption_key_env: str = "KEYDESK_KEY_ENCRYPTION_KEY"
    key_encryption_key_file: HomePath = "var/secrets/key-encryption.key"
    # The key of the audit trail's HMAC chain, kept outside the database (see store/audit.py).
    audit_key_env: str = "KEYDESK_AUDIT_KEY"
    audit_key_file: HomePath = "var/secrets/audit.key"


class LoggingSettings(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class EmbeddedUser(StrictModel):
    address: str
    password_env: str | None = None
    password_file: HomePath | None = None


class EmbeddedSettings(StrictModel):
    """The built-in mail system (pymap IMAP + aiosmtpd SMTP) for the demo and for trying keydesk."""

    enabled: bool = True
    host: Literal["127.0.0.1", "::1", "localhost"] = "127.0.0.1"
    imap_port: int = Field(default=1143, ge=1, le=65535)
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    mail_directory: HomePath = "var/mail"
    users: list[EmbeddedUser] = Field(default_factory=list)


class MetricsSettings(StrictModel):
    """A Prometheus text endpoint (/metrics) served by `keydesk run`: the figures of `keydesk status`."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    # Off loopback the endpoint speaks HTTPS only (web/server.py's rule).
    tls_cert_file: HomePath | None = None
    tls_key_file: HomePath | None = None
    # A scrape reuses the figures (and server logins) of the last this many seconds.
    cache_seconds: int = Field(default=60, ge=0)


class RetentionSettings(StrictModel):
    # Raw mails and documents are kept this many years after they arrived; `keydesk purge` removes
    # older ones. Five years is what typical 文書管理規程 give 契約 records (set your town's period).
    years: int = Field(default=5, ge=1, le=100)


class DeskSettings(StrictModel):
    name: str = Field(min_length=1)  # shown in replies, e.g. 「美郷町 契約窓口」
    address: str = Field(min_length=3)  # the desk's own address: replies come from here
    # Lines at the end of every reply (section, phone, hours).
    contact: list[str] = Field(default_factory=list)
    # Authentication-Results are trusted only from this authserv-id (the desk's own mail server).
    authserv_id: str | None = None
    reply_charset: Literal["utf-8", "iso-2022-jp"] = "utf-8"
    receipt_prefix: str = Field(default="K", pattern=r"^[A-Z]{1,4}$")
    # Who gets a reply (mailer/reply_policy.py): "authenticated" senders only; "submissions" (also
    # a short reply, quoting nothing, to an unauthenticated mail that plausibly is a submission);
    # or "all" (every mail that is not automatic). Unauthenticated means: no DMARC pass or aligned
    # SPF/DKIM pass in our own server's Authentication-Results (see authserv_id).
    reply_to: Literal["authenticated", "submissions", "all"] = "submissions"
    mailbox: MailboxSettings
    # How certificates are looked up: embedded (default), http (a guarantor's service) or manual.
    lookup: LookupSettings = LookupSettings()


class Settings(StrictModel):
    # Filled in by the loader, not read from the file.
    home: Path
    config_dir: Path
    timezone: TimeZoneName = "Asia/Tokyo"
    logging: LoggingSettings = LoggingSettings()
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    secrets: SecretsSettings = SecretsSettings()
    smtp: SmtpSettings
    outbox: OutboxSettings = OutboxSettings()
    digest: DigestSettings = DigestSettings()
    poll: PollSettings = PollSettings()
    limits: Limits = Limits()
    embedded: EmbeddedSettings = EmbeddedSettings()
    guarantor: GuarantorSettings = GuarantorSettings()
    console: ConsoleSettings = ConsoleSettings()
    metrics: MetricsSettings = MetricsSettings()
    retention: RetentionSettings = RetentionSettings()
    desks: dict[str, DeskSettings] = Field(min_length=1)
    rules: RuleSet

    @field_validator("desks")
    @classmethod
    def _desk_ids(cls, desks: dict[str, DeskSettings]) -> dict[str, DeskSettings]:
        for desk_id in desks:
            if not desk_id.isascii() or not desk_id.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"desk ids are ASCII letters, digits, '-' and '_', got {desk_id!r}")
        return desks

    def database_url(self) -> str:
        if self.database.url_env:
            url = os.environ.get(self.database.url_env)
            if not url:
                raise ConfigError([f"database.url_env: the environment variable {self.database.url_env} is not set"])
            return url
        return sqlite_url_in_home(self.database.url, self.home)


def sqlite_url_in_home(url: str, home: Path) -> str:
    """``sqlite:///var/keydesk.db`` (relative) → an absolute path under the deployment home."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(home / url[len(prefix) :])
    return url


def find_config_dir(explicit: str | Path | None = None) -> Path:
    """--config, else $KEYDESK_CONFIG, else ./config."""
    chosen = explicit or os.environ.get(CONFIG_ENV) or "config"
    path = Path(chosen).expanduser().resolve()
    if not (path / DEPLOYMENT_FILE).is_file():
        raise ConfigError(
            [
                (
                    f"{path}: no {DEPLOYMENT_FILE} here. Point {CONFIG_ENV} at a config folder, "
                    f"or create one with `keydesk init DIR`."
                )
            ]
        )
    return path


def _label(config_dir: Path, name: str) -> str:
    # Errors name the file as the admin sees it from the deployment home: config/rules.toml.
    return f"{config_dir.name}/{name}"


def _read_toml(config_dir: Path, name: str) -> dict[str, Any]:
    path = config_dir / name
    label = _label(config_dir, name)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{label}: the file is missing (keydesk init writes a fresh one)"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: not valid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not UTF-8 text"]) from None


def load_settings(config_dir: Path) -> Settings:
    """Validate both files; raise ConfigError with one line per problem."""
    deployment = _read_toml(config_dir, DEPLOYMENT_FILE)
    rules_data = _read_toml(config_dir, RULES_FILE)
    home = config_dir.parent
    context = {"home": home}
    errors: list[str] = []
    try:
        rules = RuleSet.model_validate(rules_data, context=context)
    except ValidationError as exc:
        errors += describe_errors(_label(config_dir, RULES_FILE), exc)
        rules = None
    for forbidden in ("home", "config_dir", "rules"):
        if forbidden in deployment:
            errors.append(f"{_label(config_dir, DEPLOYMENT_FILE)}: {forbidden}: unknown key (set by keydesk itself)")
    if errors:
        raise ConfigError(errors)
    try:
        settings = Settings.model_validate(
            {**deployment, "home": home, "config_dir": config_dir, "rules": rules}, context=context
        )
    except ValidationError as exc:
        raise ConfigError(describe_errors(_label(config_dir, DEPLOYMENT_FILE), exc)) from None
    _check_desks_agree(settings, config_dir)
    return settings


def _check_desks_agree(settings: Settings, config_dir: Path) -> None:
    deployed, ruled = set(settings.desks), set(settings.rules.desks)
    lines = [
        f"{_label(config_dir, RULES_FILE)}: desks.{desk}: is missing (keydesk.toml has this desk)"
        for desk in sorted(deployed - ruled)
    ] + [
        f"{_label(config_dir, DEPLOYMENT_FILE)}: desks.{desk}: is missing (rules.toml has rules for this desk)"
        for desk in sorted(ruled - deployed)
    ]
    if lines:
        raise ConfigError(lines)


def read_secret(env_name: str | None, file_path: Path | None, what: str) -> str:
    """A secret from the environment (first) or a file; ConfigError says how to provide it."""
    if env_name and os.environ.get(env_name):
        return os.environ[env_name]
    if file_path is not None:
        try:
            mode = file_path.stat().st_mode
            if mode & 0o077:
                # A secret others can read is no longer a secret: refuse it rather than use it.
                raise ConfigError(
                    [
                        (
                            f"{what}: {file_path} is readable by others (mode {mode & 0o777:04o}); "
                            f"run: chmod 600 {file_path}"
                        )
                    ]
                )
            value = file_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            value = ""
        except OSError as exc:
            raise ConfigError([f"{what}: cannot read {file_path}: {exc.strerror}"]) from None
        if value:
            return value
    sources = " or ".join(s for s in (f"${env_name}" if env_name else "", str(file_path) if file_path else "") if s)
    raise ConfigError([f"{what}: not set; provide it in {sources or 'an environment variable or file'}"])
