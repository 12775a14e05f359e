"""Width Transfer: search widths on a cheap proxy of the model and project them onto it.

`spec` parses `--proxy`; `layout` finds stages and each group's (stage, block, slot); `proxy`
builds the narrower / shallower / lower-resolution proxy and its data; `projection` matches
groups and bisects the global scale; `searcher` wraps any searcher; `setup.with_proxy` puts it
together for the pipeline and `slimdeploy search`. Only the spec is imported here, so
`options.py` can check a spec without importing the rest.
"""
from .spec import KEYS, ProxySpec, parse_proxy

__all__ = ["KEYS", "ProxySpec", "parse_proxy"]
