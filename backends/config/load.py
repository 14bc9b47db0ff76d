"""Entry points: find, read, parse and validate a config file."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from backends.config.errors import ConfigErrors, ConfigNotFound
from backends.config.loader import _Loader
from backends.config.model import Config
from backends.config.parse import _parse
from backends.errors import ConfigError

ENV_VAR = "WARROOM_CONFIG"
CONFIG_NAME = "warroom.toml"


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def load_config_text(
    text: str,
    filename: str = "<config>",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | str | None = None,
    path: Path | None = None,
) -> Config:
    """Parse and validate TOML text. Raises ConfigError (ConfigErrors when several)."""
    env = os.environ if env is None else env
    base = Path(base_dir) if base_dir is not None else (path.parent if path else Path.cwd())
    if text.startswith("\ufeff"):  # a UTF-8 byte order mark (Windows editors): not TOML, but harmless
        text = text[1:]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_POS.search(msg)
        line = int(m.group(1)) if m else None
        col = int(m.group(2)) if m else None
        reason = _TOML_POS.sub("", msg)
        if "(at end of document)" in reason:
            reason = reason.replace(" (at end of document)", "")
            line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
            col = None
        where = f" at column {col}" if col is not None else ""
        raise ConfigError(f"malformed TOML: {reason}{where}", file=filename, line=line,
                          expected="valid TOML (https://toml.io)") from None
    ld = _Loader(text, filename, base, env)
    data = ld.interpolate(data, ())
    config = _parse(ld, data, path)
    if ld.errors:
        ld.errors.sort(key=lambda e: (e.line or 0))
        raise ConfigErrors(ld.errors)
    return config


NOTHING_TO_WATCH = "nothing to watch: add a section, see examples/"
WATCH_SECTIONS = ("[postgres.NAME], [redis.NAME], [chain.NAME], [[services]], [host], [[queues]], "
                  "[breakers], [orders], [[logs]] or [[checks]]")


def require_watch(config: Config, filename: str | None = None) -> Config:
    """`config`, or ConfigError when it watches nothing (an empty file, /dev/null, only [warroom])."""
    if not config.watches:
        raise ConfigError(NOTHING_TO_WATCH, file=filename or (str(config.path) if config.path else None),
                          expected="at least one of " + WATCH_SECTIONS)
    return config


def load_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None, allow_empty: bool = False) -> Config:
    """Read and validate a config file (None: look it up with `find_config`). Raises ConfigError,
    also for a config that watches nothing (unless `allow_empty`)."""
    if path is None:
        path = find_config(None, env=env)
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p), expected="an existing TOML file") from None
    except IsADirectoryError:
        raise ConfigError("is a directory", file=str(p), expected="a TOML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=str(p),
                          expected="a UTF-8 TOML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(p), expected="a readable TOML file") from None
    config = load_config_text(text, str(p), env=env, path=p.resolve())
    return config if allow_empty else require_watch(config, str(p))


def config_search_path(explicit: str | os.PathLike[str] | None = None,
                       env: Mapping[str, str] | None = None) -> list[tuple[str, Path | None]]:
    """The places looked at, in order: (description, path or None when not given)."""
    env = os.environ if env is None else env
    import platformdirs

    places: list[tuple[str, Path | None]] = [
        ("--config", Path(explicit).expanduser() if explicit else None),
        (f"${ENV_VAR}", Path(env[ENV_VAR]).expanduser() if env.get(ENV_VAR) else None),
        ("./" + CONFIG_NAME, Path.cwd() / CONFIG_NAME),
        ("XDG config dir", Path(platformdirs.user_config_dir("warroom")) / CONFIG_NAME),
    ]
    return places


def find_config(explicit: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Path:
    """--config, else $WARROOM_CONFIG, else ./warroom.toml, else <XDG config>/warroom/warroom.toml."""
    places = config_search_path(explicit, env)
    for i, (what, p) in enumerate(places):
        if p is None:
            continue
        if i < 2:  # an explicit choice must exist: never fall back silently
            if not p.is_file():
                raise ConfigError(f"{what} names a file that does not exist" if not p.exists()
                                  else f"{what} is not a file", file=str(p), key=None,
                                  expected="an existing TOML file")
            return p
        if p.is_file():
            return p
    looked = "; ".join(f"{what}: {p if p else 'not set'}" for what, p in places)
    raise ConfigNotFound(f"no configuration file found (looked at {looked})",
                         expected="a config file: pass --config PATH, set $WARROOM_CONFIG, or create "
                               "./warroom.toml (start from examples/minimal.toml)")
