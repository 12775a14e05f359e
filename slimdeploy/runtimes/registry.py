"""Find runtime plugins through the ``slimdeploy.runtimes`` entry-point group, as any third party's."""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, Mapping

from ..errors import SlimdeployError
from .base import Runtime

GROUP = "slimdeploy.runtimes"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def runtime_names() -> list[str]:
    """Names of the installed runtime plugins."""
    return sorted(_entry_points())


def parse_runtime_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME:ARG`` (``remote:http://host:port``) or ``NAME:key=value,key=value``."""
    if not isinstance(spec, str) or not spec.strip():
        raise SlimdeployError("runtime must be a name such as onnxruntime, torch or remote:http://HOST:PORT")
    name, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    if name == "remote" and rest:
        options["url"] = rest
    elif rest:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise SlimdeployError(f"runtime option {item!r} in {spec!r} must look like key=value")
            options[key.strip()] = value.strip()
    return name, options


def get_runtime(spec: str, options: Mapping[str, Any] | None = None) -> Runtime:
    """The runtime plugin named by `spec`, configured with `options` (which override the spec's)."""
    name, spec_options = parse_runtime_spec(spec)
    found = _entry_points()
    if name not in found:
        installed = ", ".join(sorted(found)) or "none"
        raise SlimdeployError(
            f"no runtime plugin named {name!r} is installed (installed: {installed}); plugins register "
            f"under the entry-point group {GROUP!r} (onnxruntime and remote come with slimdeploy; in a checkout "
            f"`pip install -e plugins/torch` or `-e plugins/tensorrt` adds the others)")
    try:
        cls = found[name].load()
    except ImportError as exc:
        raise SlimdeployError(f"runtime plugin {name!r} could not be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise SlimdeployError(f"entry point {name!r} in {GROUP!r} is not a slimdeploy Runtime subclass")
    return cls({**spec_options, **dict(options or {})})
