"""The one place that knows the methods by name: ``--method NAME`` -> ``Method``."""

from __future__ import annotations

from masq_jax.errors import SettingsError
from masq_jax.methods.awq import AWQ
from masq_jax.methods.base import Method
from masq_jax.methods.mas import MAS
from masq_jax.methods.masquant import MASQuant
from masq_jax.methods.mbq import MBQ
from masq_jax.methods.rtn import RTN
from masq_jax.methods.smoothquant import SmoothQuant
from masq_jax.methods.smoothquant_pm import PerModalitySmoothQuant

METHODS: dict[str, Method] = {m.name: m for m in (RTN(), SmoothQuant(), AWQ(), MBQ(), MAS(), MASQuant(),
                                                   PerModalitySmoothQuant())}


def names() -> tuple[str, ...]:
    """Every method name, in the order the CLI lists them."""
    return tuple(METHODS)


def get(name: str) -> Method:
    """The method called ``name`` (one clear line naming the choices otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise SettingsError(f"--method {name!r} is not one of {', '.join(METHODS)}") from None
