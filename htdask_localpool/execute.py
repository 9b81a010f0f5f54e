"""The execute side of a pool with separate execute hosts (LOCALPOOL_EXECUTE_HOSTS=N): what
HTCondor's startd, starter and shadow do around one job.

A job goes to the least busy execute host (htdask_localpool.hosts); its input is transferred into a
fresh scratch directory (htdask_localpool.transfer); a docker/container-universe job gets a network
namespace of its own behind the host, with one published port per ``container_service_names``
entry (``<name>_HostPort`` in the job ad), unless ``docker_network_type = host``; the process
starts in the host's network namespace and a mount namespace of its own (htdask_localpool.sandbox);
at exit stdout/stderr and the output files come back.  The job ad gets ``RemoteHost``,
``StartdIpAddr``, ``JobPid`` and the host ports, as the starter and shadow publish them.
The image is never pulled: the executable runs with the execute host's software.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess

from htdask_localpool import ads, envargs, hosts, paths, procs, sandbox, spawn, transfer, userlog

log = logging.getLogger(__name__)

PUBLISHED = frozenset({"RemoteHost", "StartdIpAddr", "RemoteSlotID", "JobPid"})  # + <name>_HostPort


class Remote:
    """What the runner keeps about a job on an execute host until it has been reaped."""

    def __init__(self, host, ad: dict, pw, container):
        self.host, self.ad, self.pw, self.container = host, ad, pw, container
        self.before: dict = {}
        self.hold: tuple[int, int, str] | None = None


class ExecuteSide:
    def __init__(self, files: paths.PoolFiles, count: int):
        self.files = files
        self.plan = hosts.setup(files.root, count)
        self.busy = {h.index: 0 for h in self.plan.hosts}
        self.access = paths.hostname()

    def close(self) -> None:
        hosts.teardown(self.files.root)

    def matches(self, ad: dict) -> bool:
        """should_transfer_files = NO requires the submit host's FileSystemDomain: no execute host has it."""
        return transfer.wants_transfer(ad) is not None

    def _pick(self):
        return min(self.plan.hosts, key=lambda h: (self.busy[h.index], h.index))

    def start(self, ad: dict, pool_id: str) -> spawn.Running:
        """Start `ad`'s job on an execute host; spawn.StartFailure(code, subcode, reason) if it cannot."""
        host = self._pick()
        slot = host.slot
        c, p = ad["ClusterId"], ad["ProcId"]
        pw = spawn.owner_entry(ad, slot)
        scratch = self.files.scratch / host.name / f"dir_{c}_{p}"
        inner = f"{sandbox.EXECUTE}/dir_{c}_{p}"
        shutil.rmtree(scratch, ignore_errors=True)
        paths.ensure_dir(scratch.parent, 0o711)
        os.mkdir(scratch, 0o700)
        if os.geteuid() == 0:
            os.chown(scratch, pw.pw_uid, pw.pw_gid)
        container = None
        try:
            try:
                transfer.transfer_input(ad, str(scratch), pw, access=self.access, slot=slot)
            except transfer.TransferFailure as exc:
                raise spawn.StartFailure(exc.code, exc.subcode, exc.reason) from None
            netns = host.netns
            if _docker_run(ad) and str(ad.get("DockerNetworkType") or "").lower() != "host":
                container = hosts.Container(self.plan, host, c, p)
                try:
                    container.create(_services(ad))
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # as the starter's Docker error
                    raise spawn.StartFailure(6, 0, f"Error from {slot}: Cannot start container: {exc}") from None
                netns = container.netns
            ad["RemoteHost"] = slot
            ad["StartdIpAddr"] = host.startd_addr()
            ad["RemoteSlotID"] = 1
            if container is not None:
                for name, (hport, _cport) in container.ports.items():
                    ad[f"{name}_HostPort"] = hport
            remote = Remote(host, ad, pw, container)
            job = self._spawn(ad, pool_id, host, pw, str(scratch), inner, netns, remote)
        except BaseException:
            if container is not None:
                container.destroy()
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self.busy[host.index] += 1
        log.info("job %d.%d on %s (%s)%s", c, p, host.name, host.addr,
                 f" in {container.netns} {container.addr}" if container else "")
        return job

    def _spawn(self, ad, pool_id, host, pw, scratch, inner, netns, remote) -> spawn.Running:
        c, p = ad["ClusterId"], ad["ProcId"]
        machine = {"Machine": host.name, "Name": host.slot, "StartdIpAddr": host.startd_addr(),
                   "FileSystemDomain": self.plan.file_system_domain(host), "UidDomain": host.name,
                   "HasFileTransfer": True, "HasDocker": True, "HasContainer": True, "OpSys": "LINUX",
                   "Arch": "X86_64", "SlotID": 1}
        for name, text in ((".job.ad", ads.format_old(ad)), (".machine.ad", ads.format_old(machine))):
            with open(os.path.join(scratch, name), "w") as f:
                f.write(text)
            if os.geteuid() == 0:
                os.chown(os.path.join(scratch, name), pw.pw_uid, pw.pw_gid)
        remote.before = transfer.snapshot(scratch)
        transferred = ad.get("TransferExecutable") is not False
        cmd = f"{inner}/{transfer.EXEC_NAME}" if transferred else (ad.get("Cmd") or "")
        tag = procs.job_tag(pool_id, c, p)
        env = {"PATH": spawn.DEFAULT_PATH, "HOME": inner}
        env.update(envargs.environment_from_ad(ad))
        env.update({"_CONDOR_SCRATCH_DIR": inner, "_CONDOR_JOB_AD": f"{inner}/.job.ad",
                    "_CONDOR_MACHINE_AD": f"{inner}/.machine.ad", "_CONDOR_JOB_IWD": inner,
                    "_CONDOR_SLOT": "slot1", "BATCH_SYSTEM": "HTCondor", "TMPDIR": inner, "TMP": inner,
                    "TEMP": inner, procs.TAG_VAR: tag})
        if type(ad.get("RequestCpus")) is int and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(ad["RequestCpus"])

        def std():
            has_in = os.path.exists(os.path.join(scratch, transfer.STDIN))
            fds = [os.open(os.path.join(scratch, transfer.STDIN) if has_in else os.devnull,
                           os.O_RDONLY | os.O_CLOEXEC)]
            for n in (transfer.STDOUT, transfer.STDERR):
                # stream_output/stream_error: written to the submit side while the job runs (the shadow's
                # streaming), else to the sandbox and transferred at exit
                dest = transfer.streamed(ad, n) or os.path.join(scratch, n)
                fds.append(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))
            return fds

        fds = userlog.as_owner(pw, std)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        setup = sandbox.Setup(netns=netns, hostname=host.name, scratch=scratch, inner=inner,
                              hide=sandbox.hidden_dirs(str(paths.REPO_ROOT), str(self.files.root)),
                              software=sandbox.software_dirs(), uid=pw.pw_uid, gid=pw.pw_gid,
                              groups=os.getgrouplist(pw.pw_name, pw.pw_gid), err_fd=err_w)
        try:
            popen = subprocess.Popen([cmd] + envargs.argv_from_ad(ad), executable=cmd or "/nonexistent",
                                     env=env, stdin=fds[0], stdout=fds[1], stderr=fds[2],
                                     start_new_session=True, close_fds=True, preexec_fn=setup)
        except subprocess.SubprocessError:
            os.close(err_w)
            why = os.read(err_r, 4096).decode(errors="replace").strip() or "unknown error"
            raise spawn.StartFailure(6, 0, f"Error from {host.slot}: Failed to set up the job's sandbox: {why}")
        except OSError as exc:
            raise spawn.StartFailure(6, exc.errno or 0, f"Error from {host.slot}: Failed to execute "
                                                        f"'{cmd}': {exc.strerror or exc}")
        finally:
            for fd in set(fds) | {err_r, err_w}:
                try:
                    os.close(fd)
                except OSError:
                    pass
        job = spawn.Running((c, p), popen, tag, scratch)
        job.remote = remote
        ad["JobPid"] = popen.pid
        return job

    def finish(self, job: spawn.Running, exited: bool) -> None:
        """After the job's processes are gone: output transfer (when it exited), then clean up."""
        r = job.remote
        try:
            if exited and str(r.ad.get("WhenToTransferOutput") or "ON_EXIT").upper().startswith("ON_EXIT"):
                try:
                    transfer.transfer_output(r.ad, job.scratch, r.pw, r.before, access=self.access,
                                             slot=r.host.slot)
                except transfer.TransferFailure as exc:
                    r.hold = (exc.code, exc.subcode, exc.reason)
                    log.info("job %d.%d: %s", *job.key, exc.reason)
        finally:
            if r.container is not None:
                r.container.destroy()
            self.busy[r.host.index] -= 1
            shutil.rmtree(job.scratch, ignore_errors=True)


def _docker_run(ad: dict) -> bool:
    """Run by Docker (a network namespace of its own): docker universe, or container universe with a
    Docker image (docker_image, or container_image = docker://...); an Apptainer image (.sif, a
    directory) shares its host's network, as Apptainer does by default."""
    image = ad.get("ContainerImage")
    return bool(ad.get("WantDocker") or (ad.get("WantContainer") and (
        ad.get("DockerImage") or (isinstance(image, str) and image.startswith("docker://")))))


def _services(ad: dict) -> dict[str, int]:
    """container_service_names -> {name: <name>_ContainerPort} (condor_submit checked them)."""
    out = {}
    for name in transfer.split_list(ad.get("ContainerServiceNames")):
        port = ad.get(f"{name}_ContainerPort")
        if type(port) is int:
            out[name] = port
    return out


def open_side(files: paths.PoolFiles) -> ExecuteSide | None:
    """The pool's execute hosts per LOCALPOOL_EXECUTE_HOSTS (None: jobs run on the submit host);
    hosts.SettingError when the setting cannot be honoured."""
    n = hosts.wanted()
    return ExecuteSide(files, n) if n else None
