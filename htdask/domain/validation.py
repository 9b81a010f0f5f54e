"""The one place that checks values coming from outside (CLI, gateway, operator, job description).

Every check either returns the clean (often normalised or quoted) value or raises ValidationError with
one line naming the field and the offending value.  Submit descriptions are line oriented and expand
`$(...)` macros, so anything that ends up in one must be free of newlines, NULs, other control
characters and macro syntax; quoting is done here (ClassAd strings via classad2, arguments and
environment in HTCondor's "new" syntax, in `htdask.domain.submitvalues`) so no other module hand-rolls it.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from htdask.settings import load

log = logging.getLogger(__name__)



class ValidationError(ValueError):
    """A value from outside was refused; str() is one line naming the field and the value."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"invalid {field} {shown}: {reason}")


# ---------------------------------------------------------------------------------------------
# building blocks

def require_str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, value, f"must be a string, not {type(value).__name__}")
    return value


def _name(value: Any, field: str, max_len: int, pattern: re.Pattern, rule: str) -> str:
    """A non-empty string of at most `max_len` characters matching `pattern` (`rule` says how)."""
    s = require_str(value, field)
    if not s:
        raise ValidationError(field, value, "must not be empty")
    if len(s) > max_len:
        raise ValidationError(field, value, f"longer than {max_len} characters")
    if not pattern.match(s):
        raise ValidationError(field, value, rule)
    return s


# ---------------------------------------------------------------------------------------------
# names and numbers

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")


def validate_cluster_name(value: Any, field: str = "cluster name") -> str:
    """A DNS-1123 label: it becomes a ClassAd value, a batch name, a file name and a Redis key part."""
    return _name(value, field, 63, _DNS_LABEL, "must be lowercase letters, digits and '-', starting and ending "
                                               "with a letter or digit (DNS-1123 label)")


_WORKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def validate_worker_name(value: Any, field: str = "worker name") -> str:
    """A worker name: it is queue item data, so no separators, quotes or macros (uuid hex or cluster-N)."""
    s = require_str(value, field)
    if not s or len(s) > 253:
        raise ValidationError(field, value, "must be 1 to 253 characters")
    if not _WORKER_NAME.match(s):
        raise ValidationError(field, value, "must be letters, digits, '.', '_' and '-', starting with "
                                            "a letter or digit")
    return s


_PLAIN_INT = re.compile(r"^[0-9]+\Z")


def max_workers_per_cluster() -> int:
    """MAX_WORKERS_PER_CLUSTER (htdask/settings/model.py)."""
    return load().max_workers_per_cluster


def validate_count(value: Any, maximum: int | None = None, field: str = "worker count") -> int:
    """A worker count 0..maximum (default MAX_WORKERS_PER_CLUSTER, 1000); ints or plain digit strings."""
    if maximum is None:
        maximum = max_workers_per_cluster()
    if isinstance(value, bool):
        raise ValidationError(field, value, "must be an integer, not a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        if not _PLAIN_INT.match(value) or len(value) > 12:
            raise ValidationError(field, value, "must be a plain non-negative integer")
        n = int(value)
    else:
        raise ValidationError(field, value, f"must be an integer, not {type(value).__name__}")
    if n < 0:
        raise ValidationError(field, value, "must not be negative")
    if n > maximum:
        raise ValidationError(field, value, f"exceeds the maximum of {maximum}")
    return n


def validate_index(value: Any, field: str = "worker index") -> int:
    """A worker index (non-negative int), which becomes ClassAd integer DaskWorkerIndex."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, value, "must be an integer")
    if value < 0 or value > 2**31 - 1:
        raise ValidationError(field, value, "must be between 0 and 2147483647")
    return value


_UNIX_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def validate_unix_user_name(value: Any, field: str = "user name") -> str:
    """A POSIX portable user name (3.437): letters, digits, '.', '_', '-', not starting with '-'."""
    s = _name(value, field, 32, _UNIX_USER, "must be letters, digits, '.', '_' and '-', not starting with '-' "
                                            "(POSIX portable user name)")
    if s.isdigit():
        raise ValidationError(field, value, "must not be all digits (it would read as a uid)")
    return s


_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*\Z")
_DNS_NAME_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\Z")


def validate_email(value: Any, field: str = "e-mail address") -> str:
    """A plain ASCII mailbox local@domain.tld (no quoted local parts, no comments, no IP literals)."""
    s = require_str(value, field)
    if len(s) > 254:
        raise ValidationError(field, value, "longer than 254 characters")
    local, at, domain = s.rpartition("@")
    if not at or not local or not domain:
        raise ValidationError(field, value, "must look like name@example.org")
    if len(local) > 64 or not _EMAIL_LOCAL.match(local):
        raise ValidationError(field, value, "the part before '@' may only hold letters, digits, "
                                            "'.', '_', '%', '+' and '-'")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DNS_NAME_LABEL.match(lab) and len(lab) <= 63 for lab in labels):
        raise ValidationError(field, value, "the domain must be a DNS name with a dot")
    if not re.match(r"^[A-Za-z]{2,}\Z", labels[-1]):
        raise ValidationError(field, value, "the top-level domain must be letters")
    return s


def validate_schedd_name(value: Any, field: str = "schedd name") -> str:
    """A schedd / Celery queue name: [A-Za-z0-9_.-]+, at most 64 characters."""
    s = require_str(value, field)
    if not s or len(s) > 64:
        raise ValidationError(field, value, "must be 1 to 64 characters")
    if not re.match(r"^[A-Za-z0-9_.-]+\Z", s):
        raise ValidationError(field, value, "must be letters, digits, '_', '.' and '-'")
    return s


_JOB_ID = re.compile(r"^[1-9][0-9]{0,9}(\.[0-9]{1,9})?\Z")


def validate_job_id(value: Any, field: str = "job id") -> str:
    """'C.P' (or a bare cluster 'C'), the forms condor_rm/hold/release take positionally."""
    s = require_str(value, field)
    if not _JOB_ID.match(s):
        raise ValidationError(field, value, "must be 'cluster.proc' like '42.0'")
    return s


# ---------------------------------------------------------------------------------------------
# network addresses, images, sizes

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)\Z")


def validate_port(value: Any, field: str = "port", *, allow_zero: bool = False) -> int:
    if isinstance(value, bool):
        raise ValidationError(field, value, "must be an integer")
    if isinstance(value, str) and _PLAIN_INT.match(value) and len(value) <= 5:
        value_i = int(value)
    elif isinstance(value, int):
        value_i = value
    else:
        raise ValidationError(field, value, "must be an integer")
    low = 0 if allow_zero else 1
    if not low <= value_i <= 65535:
        raise ValidationError(field, value, f"must be between {low} and 65535")
    return value_i


def split_address(value: Any, field: str = "scheduler address") -> tuple[str, str, int]:
    """('tcp'|'tls'|'gateway', host, port) of a Dask comm address; ``gateway://proxy:port/<cluster>`` is
    dask-gateway's SNI proxy (TLS to the cluster's scheduler through one proxied port; SNI
    ``daskgateway-<cluster>``), where <cluster> is a DNS label or, as dask-gateway's KubeBackend names its
    clusters, ``<namespace>.<name>``."""
    s = require_str(value, field)
    label = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    m = re.match(r"^(tcp|tls)://(.+):([0-9]{1,5})\Z", s) or re.match(
        rf"^(gateway)://(.+):([0-9]{{1,5}})/{label}(\.{label})?\Z", s)
    if not m:
        raise ValidationError(field, value, "must be tcp://host:port, tls://host:port or "
                                            "gateway://proxy:port/<cluster>")
    scheme, host, port = m.group(1), m.group(2), m.group(3)
    if len(host) > 253 or not _HOST.match(host):
        raise ValidationError(field, value, "the host must be a DNS name, an IPv4 address or [IPv6]")
    if not 1 <= int(port) <= 65535:
        raise ValidationError(field, value, "the port must be between 1 and 65535")
    return scheme, host, int(port)


def validate_address(value: Any, field: str = "scheduler address") -> str:
    """A Dask scheduler address: tcp://host:port or tls://host:port."""
    split_address(value, field)
    return value


def validate_port_range(value: Any, field: str = "port range") -> str:
    """'40000:40100' (or one port '40000'), the form `dask worker --worker-port` takes."""
    s = require_str(value, field)
    m = re.match(r"^([0-9]{1,5})(?::([0-9]{1,5}))?\Z", s)
    if not m:
        raise ValidationError(field, value, "must be 'low:high' like '40000:40100'")
    low = int(m.group(1))
    high = int(m.group(2)) if m.group(2) else low
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise ValidationError(field, value, "ports must be between 1 and 65535")
    if high < low:
        raise ValidationError(field, value, "the high port is below the low port")
    return f"{low}:{high}" if m.group(2) else str(low)


_IMAGE = re.compile(
    r"^(?:(?P<registry>[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?\Z")


def validate_docker_image(value: Any, field: str = "docker image") -> str:
    """A container image reference: [registry[:port]/]name[:tag][@sha256:digest]."""
    s = require_str(value, field)
    if not s or len(s) > 255:
        raise ValidationError(field, value, "must be 1 to 255 characters")
    m = _IMAGE.match(s)
    if not m:
        raise ValidationError(field, value, "is not an image reference like "
                                            "'ghcr.io/dask/dask:2026.8.0'")
    # "name:tag" alone is ambiguous with "registry:port/..." only when a '/' follows; the regex
    # requires the registry group to end in '/', so it is fine.
    return s


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_MEMORY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(I?B)?\s*\Z", re.IGNORECASE)


def validate_memory(value: Any, field: str = "memory", *, minimum: int = 1) -> int:
    """A memory size in bytes: ints are bytes; '2GiB', '4 G', '512M', '1.5GB'.

    Units are binary (K=1024), as HTCondor's request_memory and dask-gateway's MemoryLimit read them.
    """
    if isinstance(value, bool):
        raise ValidationError(field, value, "must be a size like '4GiB', not a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _MEMORY.match(value)
        if not m or len(value) > 32:
            raise ValidationError(field, value, "must be a size like '4GiB', '512 M' or a byte count")
        unit = m.group(2).upper()
        if m.group(3) and m.group(3).upper() == "IB" and not unit:
            raise ValidationError(field, value, "must be a size like '4GiB', '512 M' or a byte count")
        n = int(float(m.group(1)) * _UNITS[unit])
    else:
        raise ValidationError(field, value, f"must be a size, not {type(value).__name__}")
    if n < minimum:
        raise ValidationError(field, value, f"must be at least {minimum} bytes")
    if n > 2**50:
        raise ValidationError(field, value, "is larger than 1 PiB")
    return n


def format_memory(n: int) -> str:
    """Bytes as the shortest exact '<n>GiB' / '<n>MiB' / '<n>KiB' / '<n>' (dask reads all of them)."""
    for suffix, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def validate_timeout(value: Any, field: str = "timeout", *, maximum: float = 86400 * 7) -> float:
    """A positive number of seconds (int or float, not bool, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value_f = float(value)
            except ValueError:
                raise ValidationError(field, value, "must be a number of seconds") from None
        else:
            raise ValidationError(field, value, "must be a number of seconds")
    else:
        value_f = float(value)
    if not (0 < value_f <= maximum):
        raise ValidationError(field, value, f"must be more than 0 and at most {maximum:g} seconds")
    return value_f
