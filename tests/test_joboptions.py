"""Issue 24 item 2: job options are assembled in one place (htdask/domain/joboptions.py).

Every shipped module is parsed (ast, nothing imported): none but joboptions writes a job option by name
(a dict literal's key, `opts["nthreads"] = ...`, `dict(nthreads=...)`, `.update(nthreads=...)`,
`.setdefault("log_dir", ...)`), so a second assembler fails this test the day it appears. The submit
description's renderers (jobspec, jobfiles) write submit commands, some of which share an option's name;
the local pool is apart from the product.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from htdask.domain import joboptions
from htdask.domain.validation import ValidationError
from tests.test_layers import REPO, _modules

#: options whose names mean nothing else in the product (`universe`, `environment`, `dashboard` do)
OPTION_KEYS = joboptions.option_fields() - {"universe", "environment", "dashboard"}
#: the one assembler, and the renderers of the submit description (submit commands, not options)
ALLOWED = {"htdask.domain.joboptions", "htdask.domain.jobspec", "htdask.domain.jobfiles"}


def _writes(path: Path) -> list[tuple[int, str]]:
    """(line, option name) of every place `path` writes a job option by name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Dict):
            names = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant):
                    names.append(t.slice.value)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in ("dict", "update"):
                names = [kw.arg for kw in node.keywords if kw.arg]
            elif called == "setdefault" and node.args and isinstance(node.args[0], ast.Constant):
                names = [node.args[0].value]
        found += [(node.lineno, n) for n in names if n in OPTION_KEYS]
    return found


def test_no_module_but_joboptions_writes_a_job_option():
    offenders = {name: _writes(path) for name, path in _modules().items()
                 if name not in ALLOWED and not name.startswith("htdask_localpool")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"job options assembled outside htdask/domain/joboptions.py: {offenders}"


def test_the_scan_sees_a_second_assembler(tmp_path):
    """The scan is not blind: each way of writing an option is found."""
    f = tmp_path / "second.py"
    f.write_text("o = {'nthreads': 1}\no['log_dir'] = 'x'\nd = dict(memory_limit=1)\no.update(tls_cert='c')\n"
                 "o.setdefault('scheduler_address', 'a')\nother = {'owner': 1, 'state': 2}\n")
    assert sorted(n for _, n in _writes(f)) == ["log_dir", "memory_limit", "nthreads", "scheduler_address",
                                                "tls_cert"]


def test_the_same_inputs_through_the_cli_the_gateway_and_the_operator_give_equal_options():
    """`htdask scale --threads 2 --memory 4GiB --scheduler A`, a dask-gateway config of 2 threads and 4 GiB
    (the gateway backend, the operator's spec.config) give the same worker job."""
    address = "tls://10.0.0.5:8786"
    cli = joboptions.flag_job_options(scheduler_address=address, nthreads="2", memory_limit="4GiB")
    config = {"worker_threads": 2, "worker_memory": 4 * 2**30}
    gateway = joboptions.worker_job_options(config, scheduler_address=address)
    assert cli == gateway
    site = joboptions.job_spec_inputs(cli, scheduler_address="tcp://site:8786", log_dir="/logs/c")
    assert site == joboptions.job_spec_inputs(gateway, scheduler_address="tcp://site:8786", log_dir="/logs/c")
    assert site["scheduler_address"] == address and site["log_dir"] == "/logs/c"


def test_assemble_layers_site_recorded_given_and_an_empty_value_hides_nothing():
    site = joboptions.site_defaults(scheduler_address="tcp://site:1", log_dir="/logs/c")
    recorded = {"nthreads": 2, "memory_limit": 100, "log_dir": ""}
    given = {"memory_limit": 200, "scheduler_address": None, "death_timeout": None}
    assert joboptions.assemble(site=site, recorded=recorded, given=given) == {
        "scheduler_address": "tcp://site:1", "log_dir": "/logs/c", "nthreads": 2, "memory_limit": 200,
        "death_timeout": None}
    with pytest.raises(ValidationError, match="bogus"):
        joboptions.assemble(recorded={"bogus": 1})
