"""Setting a deployment up: a fresh configuration folder and the secrets it names.

A service module for `keydesk init`, `keydesk db upgrade`, the demo and the tests; it prints
nothing (the CLI does).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from foundation.errors import UserFacingError
from keydesk.paths import default_config_dir
from keydesk.secret_files import ensure_audit_key, ensure_key_encryption_key, ensure_secret_file, new_password
from keydesk.settings import DEPLOYMENT_FILE, RULES_FILE, Settings, load_settings


def create_config(directory: Path) -> Path:
    """Write the commented default configuration set to ``directory`` (and create its secrets beside
    it); the resolved folder. An existing configuration is never overwritten."""
    directory = directory.expanduser().resolve()
    if (directory / DEPLOYMENT_FILE).exists() or (directory / RULES_FILE).exists():
        raise UserFacingError(f"{directory} already holds a configuration; nothing was changed")
    source = default_config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for name in (DEPLOYMENT_FILE, RULES_FILE):
        shutil.copyfile(source / name, directory / name)
    if (source / "templates").is_dir():
        shutil.copytree(source / "templates", directory / "templates", dirs_exist_ok=True)
    (directory / "trust").mkdir(exist_ok=True)
    create_missing_secrets(load_settings(directory))
    return directory


def create_missing_secrets(settings: Settings) -> None:
    """The key-encryption key and the embedded mail users' passwords, when not provided."""
    ensure_key_encryption_key(settings.secrets.key_encryption_key_env, settings.secrets.key_encryption_key_file)
    ensure_audit_key(settings.secrets.audit_key_env, settings.secrets.audit_key_file)
    if settings.embedded.enabled:
        for user in settings.embedded.users:
            if user.password_file is not None:
                ensure_secret_file(user.password_file, new_password, f"password of {user.address}")
