"""Separate execute hosts for the local pool (LOCALPOOL_EXECUTE_HOSTS=N, root only).

Each execute host is a network namespace of its own (``ip netns``), named after the pool
directory's hash (``lp<hash8>-exec<i>``), linked to the submit host by a veth pair whose submit
side hangs on one bridge (``lpb<hash8>``): one private /24 per pool, ``10.A.B.0/24`` picked so it
overlaps none of the machine's routes; the submit host is ``.1``, execute host i is ``.(1+i)``.
Nothing routes further: only these addresses and loopback are ever traffic targets.

Docker-universe jobs get a network namespace of their own behind their execute host, as Docker's
default bridge network does: a ``docker0`` bridge 172.17.0.1/16 inside the execute host, NAT
(nftables masquerade) for what the container sends out, and a DNAT map for the ports HTCondor
publishes (``<name>_HostPort`` on the execute host's address -> the container's port).  The
plan is kept in ``<pool>/execute-hosts.json``, so ``python -m htdask_localpool stop`` removes exactly
what this pool made.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)

SETTING = "LOCALPOOL_EXECUTE_HOSTS"
MAX_HOSTS = 32
DOCKER_NET = "172.17.0.0/16"
DOCKER_GW = "172.17.0.1"
FIRST_HOST_PORT = 31000
STARTD_PORT = 9618
#: the nftables table (inside each execute host's namespace) holding its NAT chains and published-port map
NFT_TABLE = "localpool"


class SettingError(Exception):
    """LOCALPOOL_EXECUTE_HOSTS cannot be honoured (the one line to print)."""


def wanted(environ=os.environ) -> int:
    """The number of execute hosts asked for (0: jobs run on the submit host, as before).

    Raises SettingError with one line when the value is not an integer 0..32, or when it asks for
    hosts and this process is not root or lacks ``ip`` (iproute2) / ``nft`` (nftables)."""
    text = (environ.get(SETTING) or "0").strip()
    try:
        n = int(text)
    except ValueError:
        raise SettingError(f"{SETTING}={text!r}: not a number of execute hosts (0..{MAX_HOSTS})") from None
    if not 0 <= n <= MAX_HOSTS:
        raise SettingError(f"{SETTING}={n}: not a number of execute hosts (0..{MAX_HOSTS})")
    if n and os.geteuid() != 0:
        raise SettingError(f"{SETTING}={n} needs root: execute hosts are network namespaces "
                           "(ip netns) only root can make")
    for prog, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if n and not shutil.which(prog):
            raise SettingError(f"{SETTING}={n} needs the {prog!r} program (Debian package {pkg})")
    return n


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res


def pool_hash(root) -> str:
    return hashlib.sha1(os.path.realpath(str(root)).encode()).hexdigest()[:8]


def _taken_networks() -> list:
    nets = []
    for argv in (["ip", "-4", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr", "show"]):
        for line in _run(*argv, check=False).stdout.splitlines():
            for word in line.split():
                try:
                    if "/" in word or word[0].isdigit():
                        nets.append(ipaddress.ip_network(word, strict=False))
                except ValueError:
                    continue
    return nets


def _pick_subnet(h: str) -> ipaddress.IPv4Network:
    """A 10.A.B.0/24 derived from the pool hash that overlaps no route or address of the machine."""
    taken = _taken_networks()
    start = int(h, 16) % (250 * 256)
    for k in range(250 * 256):
        v = (start + k) % (250 * 256)
        net = ipaddress.ip_network(f"10.{1 + v // 256}.{v % 256}.0/24")
        if not any(net.overlaps(t) for t in taken if t.version == 4 and t.prefixlen > 0):
            return net
    raise RuntimeError("no free private /24 for the execute hosts")


class Host:
    """One execute host: its namespace, machine name, address and slot name."""

    def __init__(self, index: int, netns: str, name: str, addr: str):
        self.index, self.netns, self.name, self.addr = index, netns, name, addr
        self.slot = f"slot1@{name}"

    def startd_addr(self) -> str:
        """The startd's sinful string, as StartdIpAddr carries it."""
        return f"<{self.addr}:{STARTD_PORT}?addrs={self.addr}-{STARTD_PORT}&alias={self.name}>"

    def run(self, *argv: str, check: bool = True, input: str | None = None):
        return _run("ip", "netns", "exec", self.netns, *argv, check=check, input=input)


class Plan:
    """The execute hosts of one pool (``count`` of them), as written to execute-hosts.json."""

    def __init__(self, root, data: dict):
        self.root, self.data = root, data
        self.hash = data["hash"]
        self.subnet = ipaddress.ip_network(data["subnet"])
        self.bridge = data["bridge"]
        self.submit_addr = str(self.subnet.network_address + 1)
        self.hosts = [Host(i, f"lp{self.hash}-exec{i}", f"exec{i}.lp{self.hash}.localpool",
                           str(self.subnet.network_address + 1 + i)) for i in range(1, data["count"] + 1)]
        self._next_port = {h.index: FIRST_HOST_PORT for h in self.hosts}
        self._seq = 0

    @staticmethod
    def path(root) -> str:
        return os.path.join(str(root), "execute-hosts.json")

    @classmethod
    def load(cls, root) -> "Plan | None":
        try:
            with open(cls.path(root)) as f:
                return cls(root, json.load(f))
        except (OSError, ValueError, KeyError):
            return None

    def file_system_domain(self, host: Host) -> str:
        """Each execute host is its own FileSystemDomain (no shared filesystem with the submit host)."""
        return host.name

    def container_netns(self, cluster: int, proc: int) -> str:
        return f"lp{self.hash}-job{cluster}.{proc}"

    def host_port(self, host: Host) -> int:
        port = self._next_port[host.index]
        self._next_port[host.index] = port + 1 if port < 60999 else FIRST_HOST_PORT
        return port


def setup(root, count: int) -> Plan:
    """Make (or re-make) the pool's `count` execute hosts; returns the plan."""
    teardown(root)
    h = pool_hash(root)
    subnet = _pick_subnet(h)
    plan = Plan(root, {"hash": h, "subnet": str(subnet), "bridge": f"lpb{h}", "count": count})
    with open(Plan.path(root), "w") as f:  # first, so a failed setup is still torn down
        json.dump(plan.data, f)
    pfx = subnet.prefixlen
    _run("ip", "link", "add", plan.bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{plan.submit_addr}/{pfx}", "dev", plan.bridge)
    _run("ip", "link", "set", plan.bridge, "up")
    for host in plan.hosts:
        outer, inner = f"lp{h}h{host.index}", f"lp{h}e{host.index}"
        _run("ip", "netns", "add", host.netns)
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", outer, "master", plan.bridge, "up")
        _run("ip", "link", "set", inner, "netns", host.netns)
        host.run("ip", "link", "set", inner, "name", "eth0")
        host.run("ip", "addr", "add", f"{host.addr}/{pfx}", "dev", "eth0")
        host.run("ip", "link", "set", "eth0", "up")
        host.run("ip", "link", "set", "lo", "up")
        # Docker's default bridge network, private to this host
        host.run("ip", "link", "add", "docker0", "type", "bridge")
        host.run("ip", "addr", "add", f"{DOCKER_GW}/16", "dev", "docker0")
        host.run("ip", "link", "set", "docker0", "up")
        host.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        host.run("nft", "-f", "-", input=_nat_rules(host.addr))
    log.info("execute hosts: %s on %s (bridge %s)", ", ".join(f"{x.name}={x.addr}" for x in plan.hosts),
             subnet, plan.bridge)
    return plan


def _nat_rules(addr: str) -> str:
    return f"""table ip {NFT_TABLE} {{
  map ports {{ type inet_service : ipv4_addr . inet_service; }}
  chain pre {{ type nat hook prerouting priority -100; ip daddr {addr} dnat ip to tcp dport map @ports; }}
  chain out {{ type nat hook output priority -100; ip daddr {addr} dnat ip to tcp dport map @ports; }}
  chain post {{ type nat hook postrouting priority 100;
    ip saddr {DOCKER_NET} oifname != "docker0" masquerade;
    ct status dnat ip saddr {DOCKER_NET} oifname "docker0" masquerade; }}
}}
"""


def teardown(root) -> bool:
    """Remove the pool's execute hosts, their container namespaces and the bridge (by the names
    in execute-hosts.json); True if there was a plan."""
    plan = Plan.load(root)
    if plan is None:
        return False
    prefix = f"lp{plan.hash}-"
    listed = _run("ip", "netns", "list", check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ")[0]
        if name.startswith(prefix):
            _run("ip", "netns", "del", name, check=False)  # its veth ends go with it
    _run("ip", "link", "del", plan.bridge, check=False)
    for host in plan.hosts:
        _run("ip", "link", "del", f"lp{plan.hash}h{host.index}", check=False)
    try:
        os.unlink(Plan.path(root))
    except OSError:
        pass
    log.info("execute hosts of %s removed", root)
    return True


class Container:
    """A docker/container-universe job's own network namespace behind its execute host."""

    def __init__(self, plan: Plan, host: Host, cluster: int, proc: int):
        self.plan, self.host = plan, host
        self.netns = plan.container_netns(cluster, proc)
        plan._seq += 1
        seq = plan._seq % 65000
        self.addr = f"172.17.{1 + seq // 250}.{2 + seq % 250}"
        self.veth = f"ct{seq}"
        self.ports: dict[str, tuple[int, int]] = {}  # service -> (host port, container port)

    def create(self, services: dict[str, int]) -> None:
        """Namespace, veth to docker0, default route via the host, and one published port per service."""
        h = self.host
        _run("ip", "netns", "del", self.netns, check=False)
        _run("ip", "netns", "add", self.netns)
        h.run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        h.run("ip", "link", "set", self.veth, "master", "docker0", "up")
        ns = ("ip", "netns", "exec", self.netns)
        _run(*ns, "ip", "addr", "add", f"{self.addr}/16", "dev", "eth0")
        _run(*ns, "ip", "link", "set", "eth0", "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "ip", "route", "add", "default", "via", DOCKER_GW)
        for name, cport in services.items():
            hport = self.plan.host_port(h)
            h.run("nft", "add", "element", "ip", NFT_TABLE, "ports", f"{{ {hport} : {self.addr} . {cport} }}")
            self.ports[name] = (hport, cport)

    def destroy(self) -> None:
        for hport, _c in self.ports.values():
            self.host.run("nft", "delete", "element", "ip", NFT_TABLE, "ports", f"{{ {hport} }}", check=False)
        self.ports.clear()
        _run("ip", "netns", "del", self.netns, check=False)
