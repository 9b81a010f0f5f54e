"""A scale or delete request: one typed value, checked once where it enters, then trusted.

`tasks.api` builds it from what the CLI, the gateway backend or the operator give (`ScaleRequest.build`,
`DeleteRequest.build`), records it and carries it in the task message as its JSON (`as_message`); the
task parses that JSON once with the same model (`parse_message`: a message from the broker is untrusted).
After that the cluster name is a `ClusterName` and the count a `WorkerCount`: no code downstream checks
them again.

Every refusal is `htdask.domain.validation.ValidationError`: one line naming the field and the value.
The worker count's maximum is MAX_WORKERS_PER_CLUSTER of the process that checks it (passed as
`max_workers`; default: this process's settings).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationInfo

from htdask.domain import validation
from htdask.domain.validation import ValidationError


def _count(value: Any, info: ValidationInfo) -> int:
    maximum = (info.context or {}).get("max_workers")
    return validation.validate_count(value, maximum)


def _names(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise ValidationError("worker names", value, f"must be a list, not {type(value).__name__}")
    return [validation.validate_worker_name(v) for v in value]


def _options(value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValidationError("job options", value, "must be a mapping of option names")
    from htdask.domain.joboptions import check_option_names
    check_option_names(value)
    return dict(value)


def _optional(check):
    """`check` for a value that may be None."""
    return lambda value: None if value is None else check(value)


def _seq(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("request number", value, "must be a positive integer")
    return value


#: a DNS-1123 label (`validation.validate_cluster_name`): a ClassAd value, a batch name, a file name, a key part
ClusterName = Annotated[str, PlainValidator(validation.validate_cluster_name)]
#: 0..MAX_WORKERS_PER_CLUSTER; an int, or a plain digit string (the CLI's argument)
WorkerCount = Annotated[int, PlainValidator(_count)]
#: a POSIX portable user name
UnixUser = Annotated[str, PlainValidator(validation.validate_unix_user_name)]
#: a schedd, which is also its Celery queue
ScheddName = Annotated[str, PlainValidator(validation.validate_schedd_name)]
OptionalUser = Annotated[str | None, PlainValidator(_optional(validation.validate_unix_user_name))]
OptionalSchedd = Annotated[str | None, PlainValidator(_optional(validation.validate_schedd_name))]
WorkerNames = Annotated[list[str] | None, PlainValidator(_names)]
JobOptions = Annotated[dict | None, PlainValidator(_options)]
RequestNumber = Annotated[int | None, PlainValidator(_seq)]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def build(cls, max_workers: int | None = None, **fields):
        """The request from an entry point's values; raises ValidationError (one line) for a bad one."""
        return cls.parse(fields, max_workers)

    @classmethod
    def parse(cls, data: dict | str | bytes, max_workers: int | None = None):
        """The request from a mapping or its JSON; raises ValidationError (one line) for a bad one."""
        context = {"max_workers": max_workers}
        try:
            if isinstance(data, (str, bytes)):
                return cls.model_validate_json(data, context=context)
            return cls.model_validate(data, context=context)
        except pydantic.ValidationError as e:
            raise _one_line(e) from None

    def as_message(self) -> dict:
        """The task's kwargs: {"request": this request's JSON}."""
        return {"request": self.model_dump_json(exclude_none=True)}

    @classmethod
    def parse_message(cls, request: str | None, legacy: dict, max_workers: int | None = None):
        """The request a task message carries: its `request` JSON, or (messages of older versions) the
        request's fields as separate kwargs. Raises ValidationError (one line) for a malformed one."""
        if request is not None and legacy:
            raise ValidationError("task message", sorted(legacy), "has both a request and loose fields")
        return cls.parse(request if request is not None else legacy, max_workers)


class ScaleRequest(_Request):
    """Scale `cluster` to `n` workers (or exactly `names`), run as `owner`, with job `options` (None: keep the
    recorded ones), on `schedd` (None: the cluster's recorded one, else SCHEDD_NAME); `seq` is its number,
    given when it is recorded."""
    kind: Literal["scale"] = "scale"
    cluster: ClusterName
    n: WorkerCount
    owner: OptionalUser = None
    options: JobOptions = None
    names: WorkerNames = None
    schedd: OptionalSchedd = None
    seq: RequestNumber = None


class DeleteRequest(_Request):
    """Remove every job of `cluster` and forget it; `seq` is its number, given when it is recorded."""
    kind: Literal["delete"] = "delete"
    cluster: ClusterName
    seq: RequestNumber = None


def _one_line(e: pydantic.ValidationError) -> ValidationError:
    """Our ValidationError for pydantic's first error (ours when a field's check raised it)."""
    err = e.errors()[0]
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, ValidationError):
        return inner
    field = ".".join(str(p) for p in err.get("loc", ())) or "request"
    if err.get("type") == "missing":
        return ValidationError("request field", field, "is missing")
    if err.get("type") == "extra_forbidden":
        return ValidationError("request field", field, "is not one of the request's fields")
    return ValidationError(field, err.get("input"), err.get("msg", "is invalid"))
