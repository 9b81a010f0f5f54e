"""The pool's machine: the slot ad its slots advertise, and matchmaking of idle jobs against it.

HTCondor's negotiator gives an idle job a slot only when the job's Requirements evaluate to true with
the slot ad as TARGET (and the slot's START with the job as TARGET). When no slot matches, the schedd
records the negotiator's rejection in the job ad: `LastRejMatchReason = "no match found "` and
`LastRejMatchTime` (epoch s); `condor_q -better-analyze` explains why, clause by clause.

This pool runs LOCALPOOL_SLOTS slots on one machine. Every slot advertises the machine's resources,
as static slots do on a machine configured with NUM_CPUS / MEMORY at its totals (an overcommitting
configuration: the pool never divides the machine between its slots):
`Cpus` (the host's CPUs, or LOCALPOOL_MACHINE_CPUS), `Memory` (MiB: the host's physical memory, or
LOCALPOOL_MACHINE_MEMORY), `Disk` (KiB free under the pool directory, or LOCALPOOL_MACHINE_DISK),
`Arch` X86_64, `OpSys` LINUX, `FileSystemDomain`/`UidDomain` the host name, `HasFileTransfer`, and
`HasDocker`/`HasContainer` (the pool runs container jobs as local processes), START = true.
The runner writes the slot ad into the pool's state when it starts (meta `machine_ad`), as a startd
advertises itself to the collector; `condor_q -better-analyze` reads it from there.

A job whose Requirements the slot ad does not satisfy is never started: it stays idle with
LastRejMatchReason / LastRejMatchTime set, as on a pool where no machine can run it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

from htdask_localpool import ads

log = logging.getLogger(__name__)

#: the rejection text the negotiator sends for a job no slot matches (HTCondor keeps its trailing space)
NO_MATCH = "no match found "
#: the version the slots advertise (the first word after `$CondorVersion:`)
CONDOR_VERSION = "$CondorVersion: 25.12.0 2026-01-01 BuildID: localpool $"


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ[name]))
    except (KeyError, ValueError):
        return default


def slot_ad(host: str, pool_dir: str) -> dict:
    """The ad every slot of the pool advertises (see the module docstring)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    try:
        disk = shutil.disk_usage(pool_dir).free // 1024
    except OSError:
        disk = 0
    cpus = _env_int("LOCALPOOL_MACHINE_CPUS", os.cpu_count() or 1)
    memory = _env_int("LOCALPOOL_MACHINE_MEMORY", memory)
    disk = _env_int("LOCALPOOL_MACHINE_DISK", disk)
    return {"MyType": "Machine", "TargetType": "Job", "Name": f"slot1@{host}", "Machine": host,
            "SlotType": "Static", "Arch": "X86_64", "OpSys": "LINUX", "CondorVersion": CONDOR_VERSION,
            "Cpus": cpus, "TotalCpus": cpus, "Memory": memory, "TotalMemory": memory, "Disk": disk,
            "TotalDisk": disk, "FileSystemDomain": host, "UidDomain": host, "HasFileTransfer": True,
            "HasDocker": True, "HasContainer": True, "HasDockerURL": True, "Start": True, "Requirements": True}


def dumps(slot: dict) -> str:
    return json.dumps(slot, sort_keys=True)


def loads(text: str | None) -> dict | None:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


class Matcher:
    """Does a job's Requirements accept the slot ad? Memoised on the Requirements and the values of the
    job attributes they refer to (the jobs of one submit share them)."""

    def __init__(self, slot: dict):
        import classad2
        try:  # HTCondor's own ClassAd functions (split, stringListMember, ...), as the negotiator has them
            import htcondor2  # noqa: F401
        except ImportError:  # pragma: no cover - the wheel ships both
            log.warning("htcondor2 missing: ClassAd functions such as split() evaluate to ERROR")
        self.slot = classad2.ClassAd({k: ads.to_classad_value(v) for k, v in slot.items()})
        self._refs: dict[str, tuple] = {}
        self._memo: dict[tuple, bool] = {}

    def matches(self, ad: dict) -> bool:
        import classad2

        from htdask_localpool import match
        req = ad.get("Requirements")
        if req is None:
            return True
        text = ads.unparse(req)
        refs = self._refs.get(text)
        if refs is None:
            refs = self._refs[text] = tuple(sorted(match.references(classad2.ExprTree(text))))
        values = []
        for low in refs:
            _name, value = ads.lookup(ad, low)
            values.append(ads.unparse(value) if value is not None else None)
        key = (text, tuple(values))
        hit = self._memo.get(key)
        if hit is None:
            job = classad2.ClassAd({k: ads.to_classad_value(v) for k, v in ad.items()})
            hit = self._memo[key] = bool(job.symmetricMatch(self.slot))  # both Requirements, as the negotiator
            if len(self._memo) > 10_000:
                self._memo.clear()
        return hit


def reject(ad: dict, now: int) -> None:
    """Record a negotiator's rejection in the job ad, as the schedd does."""
    ad["LastRejMatchReason"] = NO_MATCH
    ad["LastRejMatchTime"] = now
