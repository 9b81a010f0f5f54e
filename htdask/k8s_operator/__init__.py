"""Kubernetes operator for dask-gateway's ``DaskCluster`` resources whose workers are HTCondor jobs.

The Dask scheduler of each cluster runs in Kubernetes exactly as dask-gateway's own controller runs it
(credentials Secret, scheduler Pod, headless Service, optional traefik routes); its workers are
HTCondor jobs, asked for through our Celery tasks (``tasks.api.enqueue_scale`` /
``enqueue_delete``) on the queue of the schedd the cluster lives on.  This operator replaces
dask-gateway's ``dask-gateway-kube-controller`` (run the helm chart with ``controller.enabled:
false``); dask-gateway's API server with its ``KubeBackend`` keeps writing ``spec.replicas`` (from
scheduler heartbeats) and ``spec.active`` (on stop), and reads ``status``.

Modules, from pure to impure:

- ``config``   -- settings from the environment (``OperatorConfig``; documented in README.md).
- ``naming``   -- ``<namespace>/<name>`` of a DaskCluster -> our cluster name (a DNS-1123 label).
- ``bodies``   -- the Secret, Pod, Service and traefik route bodies, built as dask-gateway's
                  KubeController builds them (plain dicts).
- ``handlers`` -- ``reconcile(cluster, ...) -> Actions``: a pure function of the DaskCluster, its
                  scheduler pod, the Redis summary and the clock; says what to create, delete,
                  enqueue and which status to write.
- ``client``   -- the thin layer that turns Actions into kubernetes-client calls; every call the
                  operator makes is a row of ``API_CALLS``, from which ``deploy/k8s/rbac.yaml`` is checked.
- ``main``     -- the runtime: kopf handlers (create / resume / update / delete of a DaskCluster, its
                  scheduler pod's events, a timer for the Redis summaries) that call ``reconcile``
                  and ``apply``; one active replica through a Lease (``kubernetes.leaderelection``);
                  ``run()`` is what ``python cli.py operator`` calls.

kopf does the watching, the finalizer and the dispatch; what it would add to objects it does not own
is switched off: its progress and last-handled state are kept in memory (no annotations, no
``status.kopf``), it posts no Events and runs no peering (the Lease is the standard one every
Kubernetes administrator knows), so dask-gateway's objects look exactly as with the earlier
hand-written runtime and the RBAC stays small.
"""
