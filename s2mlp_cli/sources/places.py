"""Where weights live, read from the environment at call time (so tests and users can move them), and
the one rule for deleting: only files inside those places.

- the standard Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`), filled by `hf_hub_download`;
- our own folder (`S2MLP_HOME/weights/<variant>/`, default `~/.cache/s2mlp`) for imported files and the
  remembered source of each variant.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from s2mlp_cli.files import inside, s2mlp_home

DEFAULT_ENDPOINT = "https://huggingface.co"
HEX64 = re.compile(r"^[0-9a-f]{64}$")  # a sha256
HEX40 = re.compile(r"^[0-9a-f]{40}$")  # a full commit hash (or a git blob sha1)
# huggingface_hub's rule for a repository id: OWNER/NAME of letters, digits, - _ .
REPO_ID = re.compile(r"^[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?/[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?$")
_TRUE = {"1", "true", "yes", "on"}


def hub_cache() -> Path:
    if env := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env).expanduser()
    return _hf_home() / "hub"


def _hf_home() -> Path:
    if env := os.environ.get("HF_HOME"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "huggingface"


def endpoint() -> str:
    """The Hub's address (`HF_ENDPOINT`), checked once here: an http(s) URL with a host and a valid port."""
    from urllib.parse import urlsplit

    from s2mlp_cli.errors import HubError

    url = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as e:
        raise HubError(f"HF_ENDPOINT {url!r} is not a URL ({e}); set it to http(s)://HOST[:PORT]") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HubError(
            f"HF_ENDPOINT {url!r} is not an http(s) URL with a host; set it to http(s)://HOST[:PORT]"
        )
    return url


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def variant_dir(variant: str) -> Path:
    """Our folder for one variant: its imported file and its remembered source."""
    return s2mlp_home() / "weights" / variant


def discard(*paths: Path) -> None:
    """Delete files of ours: only inside the Hub cache or S2MLP_HOME, whatever a path resolves to."""
    for p in paths:
        if not (inside(p, hub_cache()) or inside(p, s2mlp_home())):
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            pass
