"""The HTCondor adapter: one `Schedd` interface (`schedd.py`) and its two implementations, the condor_*
programs (`cli.py`, with `queue_parser.py` for their output) and the htcondor2 bindings (`bindings.py`).

Callers use `get_schedd()` and the interface's exceptions; they never import an implementation.
"""
from __future__ import annotations

from htdask.settings import Settings, load
from workers.htcondor.schedd import ActResult, ParseError, Schedd, ScheddError, ScheddTimeout

__all__ = ["ActResult", "ParseError", "Schedd", "ScheddError", "ScheddTimeout", "get_schedd"]


def get_schedd(name: str | None = None, settings: Settings | None = None) -> Schedd:
    """The schedd implementation chosen by CONDOR_BACKEND ('cli' default, or 'bindings').

    `name` selects a named schedd (condor_* -name / Collector lookup); None = the local one. `settings`
    (a settings.Settings) default to this process's.
    """
    backend = (settings or load()).condor_backend
    if backend == "cli":
        from workers.htcondor.cli import CliSchedd
        return CliSchedd(name=name, settings=settings)
    if backend == "bindings":
        from workers.htcondor.bindings import BindingsSchedd
        return BindingsSchedd(name=name)
    raise ScheddError(f"unknown CONDOR_BACKEND {backend!r} (expected 'cli' or 'bindings')")  # the model refuses it first
