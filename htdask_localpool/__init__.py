"""localpool: an embedded pool that behaves like HTCondor from the outside.

Programs named like HTCondor's (htdask_localpool/bin/condor_*) keep a job queue in a SQLite
database under ``$LOCALPOOL_DIR`` and a background runner starts each job's executable
as a local process.  Output formats, attribute names and JobStatus codes follow HTCondor
(see the HTCondor manual's command reference pages), so the HTCondor layer that drives them through
subprocess works unchanged against a real submit node.

Only the stdlib is imported at package level: the runner and the launchers must start
under any python3 (classad2 is imported lazily by the modules that evaluate ClassAds).
"""

JOB_STATUS_NAMES = {1: "idle", 2: "running", 3: "removed", 4: "completed", 5: "held",
                    6: "transferring_output", 7: "suspended"}
