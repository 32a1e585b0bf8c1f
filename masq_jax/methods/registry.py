"""The one place that knows the methods by name: ``--method NAME`` -> ``Method``; and the options they
declare (``Method.options``), found by name for ``QuantSettings`` and the CLI."""

from __future__ import annotations

from typing import Any

from masq_jax.errors import SettingsError
from masq_jax.methods.awq import AWQ
from masq_jax.methods.base import Method
from masq_jax.methods.mas import MAS
from masq_jax.methods.masquant import MASQuant
from masq_jax.methods.mbq import MBQ
from masq_jax.methods.options import Option
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


def options_by_owner() -> dict[str, tuple[tuple[Option, ...], tuple[str, ...]]]:
    """Per declaring method: its own options and every method that reads them (itself and its
    subclasses), in registry order: what the CLI groups its flags by."""
    out = {}
    for owner in METHODS.values():
        own = type(owner).__dict__.get("options", ())
        if own:
            users = tuple(m.name for m in METHODS.values() if isinstance(m, type(owner)))
            out[owner.name] = (tuple(own), users)
    return out


def all_options() -> dict[str, Option]:
    """Every option any method declares, by name (one declaration per name)."""
    out: dict[str, Option] = {}
    for m in METHODS.values():
        for o in m.all_options():
            if out.setdefault(o.name, o) is not o:
                raise TypeError(f"option {o.name!r} is declared twice ({m.name})")
    return out


def option_defaults() -> dict[str, Any]:
    """Every declared option's default, by name."""
    return {name: o.default for name, o in all_options().items()}


def resolve_options(method: str, given: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The chosen method's options, ``(name, value)`` in declaration order: ``given`` values (None: the
    default) checked against their declarations; a given option of another method is checked and
    dropped (one set of flags drives several methods); an option no method declares is a TypeError."""
    m = get(method)
    known = all_options()
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"QuantSettings got unexpected option(s) {', '.join(unknown)}; methods declare "
                        f"{', '.join(known)}")
    for name, value in given.items():
        if value is not None:
            known[name].validate(value)
    return tuple((o.name, o.default if given.get(o.name) is None else given[o.name]) for o in m.all_options())
