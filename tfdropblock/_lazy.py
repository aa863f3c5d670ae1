"""Module attributes imported on first use (PEP 562), so light entry points stay light."""

import importlib
import sys


def lazy_exports(package, exports):
    """``__getattr__`` and ``__dir__`` for ``package`` resolving ``{name: module}`` lazily."""

    def __getattr__(name):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
