"""What a command needs, built once and only when asked for: settings, engine, secrets."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import Engine

from keydesk.database import make_engine, require_current
from keydesk.settings import Settings, find_config_dir, load_settings, read_secret
from store.audit import use_chain_key
from store.key_vault import KeyVault


class Runtime:
    def __init__(self, config: str | Path | None = None, debug: bool = False) -> None:
        self._config = config
        self.debug = debug

    @cached_property
    def config_dir(self) -> Path:
        return find_config_dir(self._config)

    @cached_property
    def settings(self) -> Settings:
        settings = load_settings(self.config_dir)
        if not self.debug:
            logging.getLogger().setLevel(settings.logging.level)
        return settings

    @cached_property
    def raw_engine(self) -> Engine:
        """The engine without the schema check (for `db upgrade`); its audit events are keyed."""
        engine = make_engine(self.settings.database_url())
        use_chain_key(engine, self.audit_key)
        return engine

    @property
    def audit_key(self) -> str:
        secrets = self.settings.secrets
        return read_secret(secrets.audit_key_env, secrets.audit_key_file, "audit key (keydesk db upgrade creates it)")

    @cached_property
    def engine(self) -> Engine:
        """The engine, refusing an outdated schema with the command that fixes it."""
        require_current(self.raw_engine)
        return self.raw_engine

    @cached_property
    def key_vault(self) -> KeyVault:
        secrets = self.settings.secrets
        return KeyVault(read_secret(secrets.key_encryption_key_env, secrets.key_encryption_key_file, "key-encryption key"))
