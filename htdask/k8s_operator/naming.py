"""Our cluster name for a DaskCluster ``<namespace>/<name>``.

Our cluster names are global (Redis keys, the ``DaskGatewayCluster`` ClassAd of every job, batch
names) and must be DNS-1123 labels (``htdask.domain.validation.validate_cluster_name``); DaskCluster names
are only unique inside a namespace.  The mapping is deterministic -- no shared table, so a restarted
operator or a second replica computes the same name -- and keeps the DaskCluster's name readable::

    <name, lowercased, '.'->'-', cut to 54 characters>-<first 8 hex digits of sha256("<namespace>/<name>")>

dask-gateway names clusters ``uuid4().hex`` (32 characters), so a gateway cluster
``dask-users/b7524159...2bab`` becomes ``b7524159...2bab-1f0e5c3a`` (41 characters).  Two
DaskClusters with the same name in two namespaces get different suffixes; a clash needs two
``namespace/name`` pairs whose hashes share 32 bits.  The name is written to the DaskCluster's
``status.htcondor.cluster`` and every job carries ``DaskGatewayClusterName = "<namespace>.<name>"``
(the name dask-gateway users see), so either side can be found from the other.
"""
from __future__ import annotations

import hashlib
import re

from htdask.domain.validation import validate_cluster_name

BASE_MAX = 54  # 54 + '-' + 8 hex = 63, the DNS label limit


def htcondor_cluster_name(namespace: str, name: str) -> str:
    """Our cluster name for the DaskCluster ``namespace/name`` (see the module docstring)."""
    if not namespace or not name:
        raise ValueError("a DaskCluster needs a namespace and a name")
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    base = re.sub(r"[^a-z0-9-]", "-", name.lower())[:BASE_MAX].strip("-")
    cluster = f"{base}-{digest}" if base else f"k8s-{digest}"
    return validate_cluster_name(cluster)


def gateway_cluster_name(namespace: str, name: str) -> str:
    """The cluster name dask-gateway shows its users (``KubeBackend.get_cluster_name``)."""
    return f"{namespace}.{name}"
