"""One job ad from one job's expanded submit commands, the way condor_submit builds it.

Rules follow src/condor_utils/submit_utils.cpp (SubmitHash::make_job_ad and its Set*()
helpers, HTCondor 25): attribute names, defaults, unit rounding, the default Requirements
clauses, max_retries / success_exit_code rewriting OnExitRemove.  Every expression is parsed
and stored with classad2 (its own unparse); nothing is re-typed by hand.  Submit commands
that need daemons this pool does not have (grid, vm, parallel, java, standard universes)
give a job held with a hold reason saying so.
"""
from __future__ import annotations

import fnmatch
import logging
import math
import os
import re

from htdask_localpool import ads, envargs
from htdask_localpool.expressions import expression
from htdask_localpool.requirements import requirements
from htdask_localpool.submitlang import SubmitError

log = logging.getLogger(__name__)

# universe name -> (JobUniverse, runs here)
UNIVERSES = {"standard": (1, False), "vanilla": (5, True), "docker": (5, True), "container": (5, True),
             "scheduler": (7, True), "grid": (9, False), "globus": (9, False), "java": (10, False),
             "parallel": (11, False), "local": (12, True), "vm": (13, False)}
NOT_HERE_HOLD_CODE = 26  # SystemPolicy: this pool's policy, not the job's
DEFAULT_REQUEST_MEMORY = "ifthenelse(MemoryUsage isnt undefined,MemoryUsage,(ImageSize + 1023) / 1024)"
DEFAULT_REQUEST_DISK = "DiskUsage"
NOTIFICATION = {"never": 0, "always": 1, "complete": 2, "error": 3}
SHOULD_TRANSFER = {"yes": "YES", "no": "NO", "if_needed": "IF_NEEDED"}
WHEN_TO_TRANSFER = {"on_exit": "ON_EXIT", "on_exit_or_evict": "ON_EXIT_OR_EVICT", "on_success": "ON_SUCCESS"}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGTP]?)(I?B)?\s*$", re.I)
_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
# (submit command(s), job attribute, default) for the policy expressions
_POLICY = (
    (("periodic_hold",), "PeriodicHold", False),
    (("periodic_release",), "PeriodicRelease", False),
    (("periodic_remove",), "PeriodicRemove", False),
    (("on_exit_hold",), "OnExitHold", False),
    (("on_exit_remove",), "OnExitRemove", True),
    (("periodic_hold_reason",), "PeriodicHoldReason", None),
    (("periodic_hold_subcode",), "PeriodicHoldSubCode", None),
    (("on_exit_hold_reason",), "OnExitHoldReason", None),
    (("on_exit_hold_subcode",), "OnExitHoldSubCode", None),
    (("periodic_release_reason",), "PeriodicReleaseReason", None),
    (("periodic_remove_reason",), "PeriodicRemoveReason", None),
)


def truthy(text: str) -> bool:
    """HTCondor's submit boolean (submit_param_bool): true/yes/t/y/1... else false."""
    return text.strip().lower() in ("true", "t", "yes", "y", "1")


class Values:
    """Access to one job's expanded commands by any of their names (case-insensitive)."""

    def __init__(self, values: dict[str, tuple[str, str]]):
        self.v = values

    def get(self, *names: str) -> str | None:
        for n in names:
            hit = self.v.get(n.lower())
            if hit is not None and hit[1] != "":
                return hit[1]
        return None

    def my_attrs(self):
        for low, (key, value) in self.v.items():
            if low.startswith("my.") and value != "":
                yield key[3:], value


def _choice(value: str | None, table: dict, default: str, attr: str, allowed: str) -> str:
    """A keyword submit value looked up case-insensitively in `table` (condor_submit's error otherwise)."""
    if value is None:
        return default
    got = table.get(value.lower())
    if got is None:
        raise SubmitError(f"invalid value ({value}) for {attr}.  Please either specify {allowed} and try again.")
    return got


def size(text: str, base_power: int, key: str):
    """request_memory (MiB, base 2) / request_disk (KiB, base 1) with K/M/G/T/P[B] suffixes, rounded up;
    anything else is an expression.  A ", more..." retry list keeps its first value."""
    first = text.split(",", 1)[0]
    m = _SIZE.match(first)
    if not m:
        return expression(text, key)
    unit = m.group(2).upper()
    if not unit and m.group(3):  # plain "B": bytes
        number_bytes = float(m.group(1))
    else:
        number_bytes = float(m.group(1)) * 1024.0 ** _POWER[unit or ("M" if base_power == 2 else "K")]
    return int(math.ceil(number_bytes / 1024.0 ** base_power))


def getenv_vars(spec: str, environ: dict) -> dict[str, str]:
    """getenv = true | false | list of names/globs, '!' excludes (HTCondor 10+)."""
    environ = {k: v for k, v in environ.items() if not k.startswith("_LOCALPOOL")}
    s = spec.strip()
    if s.lower() in ("true", "yes", "1", "t"):
        return dict(environ)
    if s.lower() in ("false", "no", "0", "f"):
        return {}
    pats = [p for p in re.split(r"[,\s]+", s) if p]
    keep = [p for p in pats if not p.startswith("!")]
    drop = [p[1:] for p in pats if p.startswith("!")]
    return {k: v for k, v in environ.items()
            if any(fnmatch.fnmatchcase(k, p) for p in keep) and not any(fnmatch.fnmatchcase(k, p) for p in drop)}


class AdBuilder:
    """Builds job ads for one submit (owner, working directory, submit time fixed)."""

    def __init__(self, owner: str, cwd: str, host: str, qdate: int, environ: dict):
        self.owner, self.cwd, self.host, self.qdate, self.environ = owner, cwd, host, qdate, environ
        self.dirs_seen: set[str] = set()

    def build(self, values: dict[str, tuple[str, str]], cluster: int, proc: int) -> dict:
        v = Values(values)
        ad: dict = {"MyType": "Job", "TargetType": "Machine", "ClusterId": cluster, "ProcId": proc,
                    "Owner": self.owner, "User": f"{self.owner}@{self.host}", "QDate": self.qdate,
                    "EnteredCurrentStatus": self.qdate,
                    "GlobalJobId": f"{self.host}#{cluster}.{proc}#{self.qdate}"}
        hold_reason = None
        if truthy(v.get("hold") or "false"):
            sub = v.get("hold_reason_subcode") or "0"
            if not re.fullmatch(r"-?\d+", sub):
                raise SubmitError(f"hold_reason_subcode={sub} is invalid, it must be an integer.")
            hold_reason = (v.get("hold_reason") or "submitted on hold at user's request", 15, int(sub))

        uname = (v.get("universe") or "vanilla").lower()
        if uname not in UNIVERSES:
            raise SubmitError(f"I don't know about the '{uname}' universe.")
        ad["JobUniverse"], runs_here = UNIVERSES[uname]
        if not runs_here:
            hold_reason = (f"The local pool cannot run {uname} universe jobs (it runs vanilla, docker, "
                           "container, local and scheduler universe jobs)", NOT_HERE_HOLD_CODE, 0)
            if uname in ("grid", "globus") and v.get("grid_resource"):
                ad["GridResource"] = v.get("grid_resource")
        self._image(ad, v, uname)

        iwd = v.get("initialdir", "initial_dir", "iwd")
        iwd = os.path.normpath(os.path.join(self.cwd, iwd)) if iwd else self.cwd
        if iwd not in self.dirs_seen:
            if not os.path.isdir(iwd):
                raise SubmitError(f"No such directory: {iwd}")
            self.dirs_seen.add(iwd)
        ad["Iwd"] = iwd
        exe = v.get("executable")
        te = v.get("transfer_executable")
        transfer = te is None or not te.lower().startswith("f")  # SetExecutable looks at the first letter
        if not exe:
            if uname not in ("docker", "container"):
                raise SubmitError("No 'executable' parameter was provided")
            exe, transfer = "", False
        if not transfer:
            ad["TransferExecutable"] = False
        # SetExecutable leaves the path of an executable that is not transferred as written
        ad["Cmd"] = (exe if (not exe or not transfer or os.path.isabs(exe))
                     else os.path.normpath(os.path.join(iwd, exe)))

        args = v.get("arguments", "args")
        if args:
            try:
                attr, value, _argv = envargs.parse_arguments(args)
            except envargs.SyntaxProblem as exc:
                raise SubmitError(str(exc)) from None
            ad[attr] = value
        self._environment(ad, v)
        self._files(ad, v, iwd)
        self._resources(ad, v)
        self._policy(ad, v)
        self._accounting(ad, v)

        for k, a in (("batch_name", "JobBatchName"), ("notify_user", "NotifyUser"), ("description", "JobDescription")):
            text = v.get(k)
            if text:
                ad[a] = text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
        prio = v.get("priority", "prio")
        ad["JobPrio"] = expression(prio, "priority") if prio else 0
        note = (v.get("notification") or "never").lower()
        if note not in NOTIFICATION:
            raise SubmitError("Notification must be 'Never', 'Always', 'Complete', or 'Error'")
        ad["JobNotification"] = NOTIFICATION[note]
        rank = v.get("rank", "preferences")
        ad["Rank"] = expression(rank, "rank") if rank else 0.0

        for name, value in (("NumJobStarts", 0), ("NumJobCompletions", 0), ("NumRestarts", 0),
                            ("NumSystemHolds", 0), ("JobRunCount", 0), ("CompletionDate", 0),
                            ("ExitBySignal", False), ("ExitStatus", 0), ("RemoteWallClockTime", 0.0),
                            ("CumulativeSlotTime", 0), ("ImageSize", 0), ("DiskUsage", 0),
                            ("LeaveJobInQueue", False), ("RootDir", "/")):
            ad[name] = value
        ad["SubmitterGlobalJobId"] = ad["GlobalJobId"]

        lower = {k.lower(): k for k in ad}
        for name, text in v.my_attrs():
            other = lower.get(name.lower())
            if other is not None and other != name:  # ClassAds are case-insensitive: one entry
                del ad[other]
            lower[name.lower()] = name
            ad[name] = expression(text, "MY." + name)
        if ad.get("ShouldTransferFiles") != "YES":  # matchmaking needs it when files may not move
            ad.setdefault("FileSystemDomain", self.host)
        if "Requirements" not in ad:  # MY.Requirements replaces condor_submit's own
            ad["Requirements"] = requirements(ad, v.get("requirements"), uname)
        ad["JobStatus"] = 5 if hold_reason else 1
        if hold_reason:
            ad["HoldReason"], ad["HoldReasonCode"], ad["HoldReasonSubCode"] = hold_reason
        return ad

    # ------------------------------------------------------------ pieces

    @staticmethod
    def _image(ad: dict, v: Values, uname: str) -> None:
        if uname == "docker":
            image = v.get("docker_image")
            if not image:
                raise SubmitError("docker jobs require a docker_image")
            if any(c.isspace() for c in image):
                raise SubmitError(f"'{image}' is not a valid docker_image")
            ad["WantDocker"] = True
            ad["DockerImage"] = image
        elif uname == "container":
            image, docker = v.get("container_image"), v.get("docker_image")
            if image and docker:
                raise SubmitError("cannot declare both docker_image and container_image")
            if not (image or docker):
                raise SubmitError("container jobs require a container_image or docker_image")
            ad["WantContainer"] = True
            if docker:
                ad["DockerImage"] = docker
            else:
                ad["ContainerImage"] = image
        for key, attr in (("docker_network_type", "DockerNetworkType"), ("encrypt_input_files", "EncryptInputFiles"),
                          ("encrypt_output_files", "EncryptOutputFiles")):
            if v.get(key):
                ad[attr] = v.get(key)
        services = v.get("container_service_names")  # SetContainerSpecial
        if services:
            ad["ContainerServiceNames"] = services
            for name in [n.strip() for n in services.replace(",", " ").split() if n.strip()]:
                text = v.get(f"{name}_container_port") or "-1"
                port = int(text) if text.strip().lstrip("-").isdigit() else -1
                if not 0 <= port <= 65535:
                    raise SubmitError(f"Requested {name}_container_port of {port} must be between 0 and 65535.")
                ad[f"{name}_ContainerPort"] = port

    def _environment(self, ad: dict, v: Values) -> None:
        env: dict[str, str] = {}
        getenv = v.get("getenv")
        if getenv:
            env.update(getenv_vars(getenv, self.environ))
        text = v.get("environment", "env")
        if text:
            try:
                env.update(envargs.parse_environment(text))
            except envargs.SyntaxProblem as exc:
                raise SubmitError(str(exc)) from None
        if env or text is not None:
            ad["Environment"] = envargs.environment_to_ad(env)

    @staticmethod
    def _files(ad: dict, v: Values, iwd: str) -> None:
        ad["In"] = v.get("input", "stdin") or "/dev/null"
        ad["Out"] = v.get("output", "stdout") or "/dev/null"
        ad["Err"] = v.get("error", "stderr") or "/dev/null"
        for key, attr in (("stream_output", "StreamOut"), ("stream_error", "StreamErr")):
            text = v.get(key)  # SetStdFile: a boolean, default false (set here only when given)
            if text is not None:
                ad[attr] = text.strip().lower() in ("true", "yes", "1", "t", "y")
        user_log = v.get("log")
        if user_log:
            ad["UserLog"] = user_log if os.path.isabs(user_log) else os.path.normpath(os.path.join(iwd, user_log))
        notes = v.get("submit_event_notes")  # the second line of the job's 000 event (DAGMan's "DAG Node: X")
        if notes:
            ad["SubmitEventNotes"] = notes
        should = v.get("should_transfer_files")
        stf = _choice(should, SHOULD_TRANSFER, "IF_NEEDED", "ShouldTransferFiles", "YES, NO, or IF_NEEDED")
        when = v.get("when_to_transfer_output")
        wtto = _choice(when, WHEN_TO_TRANSFER, "ON_EXIT", "WhenToTransferOutput", "ON_EXIT, or ON_EXIT_OR_EVICT")
        if when is not None:
            if wtto == "ON_EXIT_OR_EVICT" and should is None:
                stf = "YES"
        if wtto == "ON_EXIT_OR_EVICT" and stf == "IF_NEEDED":
            raise SubmitError('"when_to_transfer_output = ON_EXIT_OR_EVICT" and "should_transfer_files = '
                              'IF_NEEDED" are incompatible.')
        ad["ShouldTransferFiles"] = stf
        if stf != "NO":
            ad["WhenToTransferOutput"] = wtto
        for key, attr in (("transfer_input_files", "TransferInput"), ("transfer_output_files", "TransferOutput"),
                          ("transfer_output_remaps", "TransferOutputRemaps")):
            text = v.get(key)
            if text:
                if stf == "NO" and key != "transfer_output_remaps":
                    raise SubmitError(f"You specified {key} but should_transfer_files = NO")
                # SetTransferFiles assigns the remaps as an expression: the quoted string's value
                ad[attr] = expression(text, key) if key == "transfer_output_remaps" else text

    @staticmethod
    def _resources(ad: dict, v: Values) -> None:
        cpus = v.get("request_cpus", "RequestCpus")
        ad["RequestCpus"] = expression(cpus, "request_cpus") if cpus else 1
        mem = v.get("request_memory", "RequestMemory")
        ad["RequestMemory"] = (size(mem, 2, "request_memory") if mem
                               else ads.Expr(DEFAULT_REQUEST_MEMORY))
        disk = v.get("request_disk", "RequestDisk")
        ad["RequestDisk"] = size(disk, 1, "request_disk") if disk else ads.Expr(DEFAULT_REQUEST_DISK)
        gpus = v.get("request_gpus", "RequestGpus")
        if gpus:
            ad["RequestGpus"] = expression(gpus, "request_gpus")
        for low, (key, text) in v.v.items():  # request_<tag> custom resources (tag >= 2 characters)
            if (low.startswith("request_") and len(low) >= 10 and text and low not in (
                    "request_cpus", "request_memory", "request_disk", "request_gpus",
                    "request_cpu", "request_gpu")):  # the last two: typos condor_submit ignores
                ad["Request" + key[8:]] = expression(text, key)

    @staticmethod
    def _policy(ad: dict, v: Values) -> None:
        for keys, attr, default in _POLICY:
            text = v.get(*keys)
            if text:
                ad[attr] = expression(text, keys[0])
            elif default is not None:
                ad[attr] = default
        retries, success = v.get("max_retries"), v.get("success_exit_code")
        if retries is None and success is None:
            return
        for key, text in (("max_retries", retries), ("success_exit_code", success)):
            if text is not None and not re.fullmatch(r"-?\d+", text):
                raise SubmitError(f"{key}={text} is invalid, it must be an integer.")
        ad["JobMaxRetries"] = int(retries) if retries is not None else 2  # DEFAULT_JOB_MAX_RETRIES
        if v.get("on_exit_remove") and success is None:
            return  # SetJobRetries keeps a user's on_exit_remove as is
        code = "0"
        if success is not None:
            ad["JobSuccessExitCode"] = int(success)
            code = "JobSuccessExitCode"
        text = f"NumJobCompletions > JobMaxRetries || ExitCode =?= {code}"
        user = v.get("on_exit_remove")
        if user:
            text += f" || ({user})"
        ad["OnExitRemove"] = expression(text, "on_exit_remove")

    def _accounting(self, ad: dict, v: Values) -> None:
        group = v.get("accounting_group")
        user = v.get("accounting_group_user") or self.owner
        if truthy(v.get("nice_user") or "false"):
            ad["NiceUser"] = True
            group = "nice-user"
        if group:
            ad["AcctGroup"] = group
            ad["AcctGroupUser"] = user
            ad["AccountingGroup"] = f"{group}.{user}"
        limits = v.get("concurrency_limits")
        if limits:
            ad["ConcurrencyLimits"] = ",".join(x for x in re.split(r"[,\s]+", limits.lower()) if x)
