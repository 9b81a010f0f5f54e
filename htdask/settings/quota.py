"""Quotas per owner: the site's limits (settings `QUOTA_*`), the quota file's per-owner and per-Unix-group
overrides, and the rule that merges them into one owner's limits.

The quota file (`QUOTA_FILE`, YAML or JSON, read like `USER_MAP_FILE`)::

    owners:                 # per Unix user (the owner jobs run as)
      alice: {workers: 200, cores: 400, memory: 800GiB}
      bob:   {clusters: 1}
    groups:                 # per Unix group: applies to every member
      cms:   {workers: 100, gpus: 4}

Each entry may give `clusters`, `workers`, `cores`, `memory` (bytes, or with a unit: `64GiB`) and `gpus`;
0 means unlimited. An owner's limit of one resource is, first found: the owner's entry; else the most
generous of the entries of the groups the owner belongs to (0, unlimited, is the most generous); else
the site's setting. Limits are counted over the owner's clusters: clusters recorded, and their desired
workers times each worker's `request_cpus`, `request_memory` (MiB) and `request_gpus`.

Bottom layer: stdlib, pydantic and PyYAML only. `quota_file(path)` re-reads the file when it changes
(its mtime or size), so a long-running gateway or operator follows an edited file; `limits_for` gives
one owner's limits.
"""
from __future__ import annotations

import grp
import os
import pwd
import threading
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from htdask.settings.base import Bytes, Count, Section, setting

#: the limited resources, in the order the state script takes them; memory in MiB
RESOURCES = ("clusters", "workers", "cores", "memory", "gpus")
#: the setting naming each site limit (used in refusal notes)
SETTING_OF = {"clusters": "QUOTA_MAX_CLUSTERS", "workers": "QUOTA_MAX_WORKERS", "cores": "QUOTA_MAX_CORES",
              "memory": "QUOTA_MAX_MEMORY", "gpus": "QUOTA_MAX_GPUS"}
MIB = 2 ** 20


def _mib(value: int) -> int:
    """Bytes as whole MiB (a limit under 1 MiB still limits: at least 1)."""
    return max(1, int(value) // MIB) if value else 0


class Entry(BaseModel):
    """One owner's or group's overrides (None: not given here)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    clusters: int | None = Field(None, ge=0)
    workers: int | None = Field(None, ge=0)
    cores: int | None = Field(None, ge=0)
    memory: Bytes | None = None
    gpus: int | None = Field(None, ge=0)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value):
        if value is not None and value < 0:
            raise ValueError("must be at least 0")
        return value

    def values(self) -> dict[str, int]:
        """The limits given, memory in MiB."""
        out = {r: getattr(self, r) for r in RESOURCES if getattr(self, r) is not None}
        if "memory" in out:
            out["memory"] = _mib(out["memory"])
        return out


class QuotaFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    owners: dict[str, Entry] = Field(default_factory=dict)
    groups: dict[str, Entry] = Field(default_factory=dict)


_cache: dict[str, tuple[tuple[int, int], QuotaFile]] = {}
_lock = threading.Lock()


def parse_quota_text(text: str, where: str = "quota file") -> QuotaFile:
    """The quota file from its text (YAML; JSON is YAML); ValueError, one line naming `where`, if bad."""
    import yaml
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{where} is not YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping with `owners:` and/or `groups:`")
    for section in ("owners", "groups"):
        if data.get(section) is None:
            data.pop(section, None)
    try:
        return QuotaFile.model_validate(data)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        raise ValueError(f"{where}: {loc}: {err['msg']}") from None


def quota_file(path: str) -> QuotaFile:
    """The parsed file at `path`, re-read when its mtime or size changes; ValueError (one line naming the
    file) if it cannot be read or is malformed."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    stamp = (st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(path)
        if hit and hit[0] == stamp:
            return hit[1]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    parsed = parse_quota_text(text, path)
    with _lock:
        _cache[path] = (stamp, parsed)
    return parsed


def unix_groups(user: str) -> list[str]:
    """The names of the Unix groups `user` belongs to (primary and supplementary); [] for an unknown user."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return []
    names = []
    for gid in os.getgrouplist(user, pw.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def merge(site: dict[str, int], owner: dict[str, int] | None, groups: list[dict[str, int]]) -> dict[str, int]:
    """One owner's limits: its own entry's, else its groups' most generous (0 = unlimited), else the site's."""
    out = dict(site)
    for r in RESOURCES:
        given = [g[r] for g in groups if r in g]
        if given:
            out[r] = 0 if 0 in given else max(given)
        if owner and r in owner:
            out[r] = owner[r]
    return out


class QuotaSettings(Section):
    """Quotas per owner (README "Quotas per owner"): checked where a request is recorded."""

    quota_max_clusters: Count = setting(0, env="QUOTA_MAX_CLUSTERS",
                                        meaning="clusters one owner may have at once; 0 = unlimited")
    quota_max_workers: Count = setting(0, env="QUOTA_MAX_WORKERS",
                                       meaning="workers (desired, over all its clusters) one owner may ask for; "
                                               "0 = unlimited")
    quota_max_cores: Count = setting(0, env="QUOTA_MAX_CORES",
                                     meaning="cores (workers × `request_cpus`) one owner may ask for; 0 = unlimited")
    quota_max_memory: Bytes = setting(0, env="QUOTA_MAX_MEMORY",
                                         meaning="memory (workers × `request_memory`) one owner may ask for, bytes "
                                                 "or with a unit (`512GiB`); 0 = unlimited")
    quota_max_gpus: Count = setting(0, env="QUOTA_MAX_GPUS",
                                    meaning="GPUs (workers × `request_gpus`) one owner may ask for; 0 = unlimited")
    quota_file: str | None = setting(env="QUOTA_FILE",
                                     meaning="YAML/JSON file of per-owner (`owners:`) and per-Unix-group "
                                             "(`groups:`) quotas over these; re-read when it changes")
    quota_mode: Literal["refuse", "grant"] = setting(
        "refuse", env="QUOTA_MODE",
        meaning="a request that would pass a quota: `refuse` it (nothing recorded), or `grant` it up to the "
                "quota with a note")

    @field_validator("quota_max_memory")
    @classmethod
    def _memory(cls, value):
        if value < 0:
            raise ValueError("must be at least 0")
        return value

    @field_validator("quota_file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        if value:
            quota_file(value)  # a bad file stops the process at start, one line naming it
        return value or None

    def site_limits(self) -> dict[str, int]:
        return {"clusters": self.quota_max_clusters, "workers": self.quota_max_workers,
                "cores": self.quota_max_cores, "memory": _mib(self.quota_max_memory), "gpus": self.quota_max_gpus}

    def limits_for(self, owner: str) -> dict[str, int]:
        """`owner`'s limits (memory in MiB; 0 = unlimited); ValueError naming the file if it became bad."""
        site = self.site_limits()
        if not self.quota_file:
            return site
        qf = quota_file(self.quota_file)
        own = qf.owners.get(owner)
        groups = [qf.groups[g].values() for g in unix_groups(owner) if g in qf.groups] if qf.groups else []
        return merge(site, own.values() if own else None, groups)

    @property
    def enabled(self) -> bool:
        """False when no limit is set anywhere (then nothing needs checking, only counting)."""
        return bool(self.quota_file) or any(self.site_limits().values())
