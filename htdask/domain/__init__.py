"""The domain: what a cluster, a worker job and a summary are, and the rules their values obey.

- `validation`: every input checked into a value once, at each boundary (names, ids, sizes, ...).
- `jobspec` + `submitdesc`: a worker job as data (`WorkerJobSpec`) and its submit description.
- `joboptions`: the ONE mapping from a gateway/DaskCluster cluster config to worker job options.
- `summary` + `jobstatus`: a cluster's jobs as counts and records (from job ads).
- `pyenv`: the interpreter and files a job can run whatever user it runs as.

Pure: no Redis, no Celery, no schedd; it imports only the standard library, htcondor2/classad2's
parsers and itself. Top level (beside `workers/`) because entry points, tasks and the submit-node
side all use it.
"""
