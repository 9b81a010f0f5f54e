"""The job's Requirements as condor_submit writes them (SubmitHash::SetRequirements, submit_utils.cpp).

The user's expression in parentheses, then the clauses it does not already cover: Arch, OpSys
(unless it tests an OpSys attribute; docker/container jobs get HasDocker/HasContainer instead),
Disk, Memory, Cpus, Gpus and custom ``Request<Tag>`` resources, and the file transfer /
FileSystemDomain clause.  Parsed and unparsed by classad2.
"""
from __future__ import annotations

import logging

from htdask_localpool import ads
from htdask_localpool.expressions import expression
from htdask_localpool.submitlang import SubmitError

log = logging.getLogger(__name__)


def requirements(ad: dict, user: str | None, uname: str):
    """SubmitHash::SetRequirements: the user's expression and the clauses it does not already cover."""
    from htdask_localpool import match

    parts = [f"({user})"] if user else []
    refs: set[str] = set()
    if user:
        tree = expression(user, "requirements")
        if type(tree) is ads.Expr:
            import classad2

            refs = {r.lower().removeprefix("target.").split(".")[0]
                    for r in classad2.ClassAd().externalRefs(classad2.ExprTree(str(tree)))}
            if "requirements" in match.references(classad2.ExprTree(str(tree))):
                raise SubmitError(f"Requirements = {user}\nIs Circular. Did you intend to use $(Requirements) ?")
    if "arch" not in refs:
        parts.append('(TARGET.Arch == "X86_64")')
    if uname == "docker":
        parts.append("TARGET.HasDocker")
    elif uname == "container":
        parts.append("TARGET.HasContainer" + (" && TARGET.HasDockerURL" if "DockerImage" in ad else ""))
    elif not refs & {"opsys", "opsysandver", "opsyslongname", "opsysshortname", "opsysname", "opsyslegacy"}:
        parts.append('(TARGET.OpSys == "LINUX")')
    if "disk" not in refs:
        disk = ad.get("RequestDisk")
        if not (type(disk) in (int, float) and disk <= 0):
            parts.append('(versionGE(split(TARGET.CondorVersion)[1], "25.12.0") || '
                         '(TARGET.Disk >= RequestDisk))' if ad["JobUniverse"] == 5
                         else "(TARGET.Disk >= RequestDisk)")
    mem = ad.get("RequestMemory")
    if not (type(mem) in (int, float) and mem <= 1):
        parts.append("(TARGET.Memory >= RequestMemory)")
    cpus = ad.get("RequestCpus")
    if "cpus" not in refs and not (type(cpus) in (int, float) and cpus <= 1):
        parts.append("(TARGET.Cpus >= RequestCpus)")
    for name, value in list(ad.items()):
        tag = name[7:]
        if (name.startswith("Request") and len(tag) >= 2 and tag[0] != "_"
                and tag not in ("Cpus", "Disk", "Memory") and tag.lower() not in refs):
            if type(value) is str:
                if value:
                    parts.append(f"regexp({name}, TARGET.{tag})")
            elif not (type(value) in (int, float) and value <= 0):
                parts.append(f"(TARGET.{tag} >= {name})")
    stf = ad.get("ShouldTransferFiles")
    if stf == "NO":
        if "filesystemdomain" not in refs:
            parts.append("(TARGET.FileSystemDomain == MY.FileSystemDomain)")
    elif not refs & {"hasfiletransfer", "hasjobtransferplugins"}:
        if stf == "IF_NEEDED" and "filesystemdomain" not in refs:
            parts.append("((TARGET.FileSystemDomain == MY.FileSystemDomain) || (TARGET.HasFileTransfer))")
        else:
            parts.append("(TARGET.HasFileTransfer)")
    return expression(" && ".join(parts), "requirements")
