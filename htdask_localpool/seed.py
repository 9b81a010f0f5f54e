"""`python -m htdask_localpool seed N`: insert N job ads in one transaction, for benchmarks.

String attribute values may contain $(ClusterId) / $(ProcId), expanded per job.

Seeded jobs look like submitted ones (same attribute set) but are flagged in the
internal ``seeded`` column, so the runner never starts them.
"""
from __future__ import annotations

import logging
import os
import time

from htdask_localpool import ads, paths, store

log = logging.getLogger(__name__)


def seed(count: int, attrs: dict, status: int = 1, owner: str | None = None,
         procs_per_cluster: int = 1) -> tuple[int, int]:
    """Insert ``count`` jobs; returns (first cluster, last cluster)."""
    owner = owner or paths.current_user()
    host = paths.hostname()
    now = int(time.time())
    per = max(1, procs_per_cluster)
    nclusters = (count + per - 1) // per
    template = {
        "MyType": "Job", "TargetType": "Machine", "Owner": owner, "User": f"{owner}@{host}",
        "JobStatus": status, "QDate": now, "EnteredCurrentStatus": now, "JobUniverse": 5,
        "Iwd": "/tmp", "Cmd": "/bin/sleep", "Args": "3600", "In": "/dev/null", "Out": "/dev/null",
        "Err": "/dev/null", "RequestCpus": 1, "RequestMemory": 1024, "RequestDisk": 1048576,
        "Requirements": ads.Expr('(TARGET.Arch == "X86_64") && (TARGET.OpSys == "LINUX") && '
                                 '(TARGET.Disk >= RequestDisk) && (TARGET.Memory >= RequestMemory)'),
        "JobPrio": 0, "NumJobStarts": 0, "NumRestarts": 0, "NumSystemHolds": 0, "JobRunCount": 0,
        "CompletionDate": 0, "ExitBySignal": False, "ExitStatus": 0, "RemoteWallClockTime": 0.0,
        "CumulativeSlotTime": 0, "ImageSize": 0, "LeaveJobInQueue": False, "OnExitRemove": True,
        "OnExitHold": False, "PeriodicHold": False, "PeriodicRelease": False, "PeriodicRemove": False,
        "Rank": 0.0, "RootDir": "/", "JobNotification": 0,
    }
    if status == 5:
        template.update(HoldReason="seeded on hold", HoldReasonCode=15, HoldReasonSubCode=0)
    template.update(attrs)
    # string values may use $(ClusterId)/$(ProcId) (also $(Cluster)/$(Process)), expanded per job
    templated = [k for k, v in attrs.items() if type(v) is str and "$(" in v]
    con = store.connect()
    try:
        with store.transaction(con):
            first = int(store.get_meta(con, "next_cluster", 1))
            store.set_meta(con, "next_cluster", first + nclusters)
            store.register_names(con, list(template) + ["ClusterId", "ProcId", "GlobalJobId"])
            encode = ads.encode

            def rows():
                n = 0
                for ci in range(nclusters):
                    c = first + ci
                    for p in range(per):
                        if n >= count:
                            return
                        ad = dict(template)
                        ad["ClusterId"] = c
                        ad["ProcId"] = p
                        for k in templated:
                            ad[k] = (template[k].replace("$(ClusterId)", str(c)).replace("$(ProcId)", str(p))
                                     .replace("$(Cluster)", str(c)).replace("$(Process)", str(p)))
                        ad["GlobalJobId"] = f"{host}#{c}.{p}#{now}"
                        yield (c, p, status, owner, 1, encode(ad))
                        n += 1

            con.executemany("INSERT INTO jobs(cluster, proc, status, owner, seeded, ad) "
                            "VALUES(?,?,?,?,?,?)", rows())
    finally:
        con.close()
    log.info("seeded %d job(s) in clusters %d..%d (pid %d)", count, first, first + nclusters - 1, os.getpid())
    return first, first + nclusters - 1
