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
- ``lease``    -- leader election on a ``coordination.k8s.io/v1`` Lease (pure decision + loop).
- ``client``   -- the thin layer that turns Actions into kubernetes-client calls; every call goes
                  through the ``API_CALLS`` table, from which ``deploy/k8s/rbac.yaml`` is checked.
- ``main``     -- list+watch of DaskClusters and scheduler pods, a work queue, periodic status
                  refresh from Redis, the lease; ``run()`` is what ``python cli.py operator`` calls.

Why the kubernetes client's list+watch and not kopf
----------------------------------------------------
kopf would give us watching, retries and finalizers for free, but:

* it brings its own asyncio runtime, its own dependency set (aiohttp, iso8601, python-json-logger)
  and its own bookkeeping in our objects (``kopf.zalando.org/last-handled-configuration``
  annotations, progress storage in ``status.kopf``) -- extra writes into objects that
  dask-gateway owns, and extra RBAC verbs we would have to grant;
* its "peering" is not leader election: it pauses operators when it sees peers, needs its own
  ``KopfPeering`` CRDs, and is off by default; we want a plain Lease, which every Kubernetes
  administrator understands;
* its handlers are decorated coroutines bound to its registry, so testing them without an API
  server means mocking kopf itself.

What we need is small: one informer on DaskClusters, one on scheduler pods, a serial work queue and
a Lease.  The kubernetes client (already a dependency, pinned) does list/watch; our handlers stay
pure functions over dicts that the tests feed with the objects dask-gateway writes, and the client
layer is tested at the kubernetes client's HTTP boundary.  The cost -- about 300 lines for the
watch loop, retry queue and lease -- is paid once and is covered by tests.
"""
