"""USER_MAP_FILE: a YAML mapping ``e-mail: unixuser``, re-read when its mtime or size changes."""
from __future__ import annotations

import logging
import os
import threading

import yaml

from htdask.domain.validation import ValidationError, validate_email, validate_unix_user_name
from workers.identity.errors import IdentityConfigError

log = logging.getLogger(__name__)


_map_lock = threading.Lock()
_map_cache: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}


def load_user_map(path: str) -> dict[str, str]:
    """lower-case e-mail -> Unix user from the YAML file; re-read only when its mtime or size changed."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise IdentityConfigError(f"cannot read USER_MAP_FILE {path}: {e.strerror}") from None
    stamp = (st.st_mtime_ns, st.st_size)
    with _map_lock:
        cached = _map_cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise IdentityConfigError(f"cannot read USER_MAP_FILE {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise IdentityConfigError(f"USER_MAP_FILE {path} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IdentityConfigError(f"USER_MAP_FILE {path} must be a mapping 'e-mail: unixuser', "
                                  f"not a {type(data).__name__}")
    mapping: dict[str, str] = {}
    for key, user in data.items():
        try:
            email = validate_email(key, "USER_MAP_FILE e-mail").strip().lower()
            name = validate_unix_user_name(user, f"USER_MAP_FILE user of {key}")
        except ValidationError as e:
            raise IdentityConfigError(f"USER_MAP_FILE {path}: {e}") from None
        if email in mapping and mapping[email] != name:
            raise IdentityConfigError(f"USER_MAP_FILE {path}: e-mail {key!r} is mapped twice "
                                      f"({mapping[email]}, {name})")
        mapping[email] = name
    with _map_lock:
        _map_cache[path] = (stamp, mapping)
    log.info("USER_MAP_FILE %s: %d e-mail addresses", path, len(mapping))
    return mapping
