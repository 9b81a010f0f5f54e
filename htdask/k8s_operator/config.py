"""Operator settings: the `operator` section of the settings model (htdask/settings/sections.py), where every
variable is declared with its type, default, unit and meaning (listed in the README's configuration table).

`htdask operator`'s options (--instance, --api-url, --namespace) override the environment. `KUBECONFIG`
(read by the Kubernetes client) names the kubeconfig when not running in a pod.
"""
from __future__ import annotations

from pydantic import ValidationError

from htdask.settings import OperatorSettings, SettingsError, load
from htdask.settings.errors import one_line

#: the operator's settings (the section's model; tests build it directly with keyword arguments)
OperatorConfig = OperatorSettings


def from_env(**overrides) -> OperatorSettings:
    """The operator section of this process's settings; keyword arguments that are not None win.

    Raises ValueError (one line naming the variable) for a bad or missing setting.
    """
    cfg = load().operator
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        try:
            cfg = OperatorSettings.model_validate({**cfg.model_dump(), **given})
        except ValidationError as e:
            raise SettingsError(one_line(e)) from None
    check(cfg)
    return cfg


def check(cfg: OperatorSettings) -> None:
    """Refuse settings the operator cannot work without (the model checked each value's type and range)."""
    from htdask.state.connection import parse
    parse(load().redis_url)  # a single Redis or Sentinel (RedisSettingError is a ValueError naming the setting)
    cfg.require()
