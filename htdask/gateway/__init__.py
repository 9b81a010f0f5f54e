"""Dask Gateway backend whose workers are HTCondor jobs submitted by our Celery tasks.

`htdask.gateway.backend.HTCondorBackend` is a `DBBackendBase` (dask-gateway-server keeps its state machine,
timeouts and database); `htdask/gateway/config.py` is a ready config for `dask-gateway-server -f`.
"""
