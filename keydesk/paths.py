"""Where keydesk finds its own default configuration (for `keydesk init` and the demo)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def default_config_dir() -> Path:
    """The commented default config set shipped with keydesk.

    In a source checkout (editable install) that is the repository's own ``config/``; a built
    wheel carries the same files as the package ``keydesk.default_config``.
    """
    source_tree = Path(__file__).resolve().parents[1] / "config"
    if (source_tree / "keydesk.toml").is_file():
        return source_tree
    try:
        packaged = importlib.resources.files("keydesk.default_config")
    except ModuleNotFoundError:  # pragma: no cover - only in a broken install
        raise FileNotFoundError("keydesk's default configuration is not installed") from None
    return Path(str(packaged))
