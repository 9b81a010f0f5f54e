"""Submit-node side of the controller: the one schedd interface (CLI or htcondor2 bindings), the
streaming condor_q parser, the Dask worker job description, summaries, run-as-user and validation.

Nothing here talks to Redis or Celery; the layers above call in (see docs/design.md).
"""
