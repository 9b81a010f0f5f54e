"""Dask Gateway backend whose workers are HTCondor jobs submitted by our Celery tasks.

`gateway.backend.HTCondorBackend` is a `DBBackendBase` (dask-gateway-server keeps its state machine,
timeouts and database); `gateway/config.py` is a ready config for `dask-gateway-server -f`.
"""
