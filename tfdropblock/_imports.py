"""Two import hooks that ``tfdropblock/__init__.py`` installs; neither imports TensorFlow itself.

- In a source checkout, ``tfdropblock.export`` and ``tfdropblock.models`` live in the sibling
  folders ``export/`` and ``models/`` (``package-dir`` in pyproject.toml), not inside
  ``tfdropblock/``.
- The layers must be registered with Keras before a ``.keras`` file is loaded, yet
  ``import tfdropblock`` must stay light for the CLI.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

SUBPACKAGES = ("export", "models")


class _CheckoutFinder:
    """Meta-path finder for exactly ``tfdropblock.export`` and ``tfdropblock.models``."""

    def __init__(self, locations):
        self.locations = locations  # full name -> folder

    def find_spec(self, name, path=None, target=None):
        folder = self.locations.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)])


def map_checkout_subpackages(package, package_dir):
    """Make ``package.export`` and ``package.models`` importable from a source checkout.

    Python finds ``./tfdropblock/`` first when run from the clone's root, even after a normal
    ``pip install .``, and that folder holds neither subpackage: the install's layout exists only
    in site-packages (an editable install maps them with setuptools' own finder, which this
    mirrors). A finder for these two names only, rather than the clone's root appended to
    ``__path__``, which would also turn ``benchmarks/``, ``tests/`` and ``docs/`` into
    subpackages. Does nothing for an installed package (no pyproject.toml beside it).
    """
    package_dir = Path(package_dir)
    root = package_dir.parent
    if not (root / "pyproject.toml").is_file():
        return
    locations = {f"{package}.{name}": root / name for name in SUBPACKAGES
                 if not (package_dir / name).exists() and (root / name / "__init__.py").is_file()}
    if locations and not any(isinstance(f, _CheckoutFinder) for f in sys.meta_path):
        sys.meta_path.append(_CheckoutFinder(locations))


class _AfterKerasFinder:
    """Meta-path finder that runs ``callback`` once ``keras`` has been imported.

    It finds ``keras`` through the finders after it and wraps that spec's own loader, so the
    module is the one Python would have loaded anyway; it leaves ``sys.meta_path`` once the
    callback ran. (A bare ``importlib.util.find_spec("keras")``, which TensorFlow makes while
    it starts, creates a spec without executing it: the finder then stays for the real import.)
    """

    def __init__(self, callback):
        self.callback = callback

    def find_spec(self, name, path=None, target=None):
        if name != "keras" or self not in sys.meta_path:
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_keras = spec.loader.exec_module

        def exec_module(module):
            exec_keras(module)
            del spec.loader.exec_module  # the loader is this spec's own: leave it as it was
            if self in sys.meta_path:
                sys.meta_path.remove(self)
                try:
                    self.callback()
                except Exception as e:  # noqa: BLE001
                    # Failing here would fail ``import keras`` for the whole process (and
                    # TensorFlow swallows it when it imports Keras). Importing a tfdropblock
                    # name raises the real error again.
                    warnings.warn(f"tfdropblock: its layers could not be registered with "
                                  f"Keras ({type(e).__name__}: {e})", stacklevel=2)

        spec.loader.exec_module = exec_module
        return spec


def register_layers_with_keras(layers_module):
    """Import ``layers_module`` (whose classes register themselves with Keras) with Keras.

    ``keras.models.load_model`` finds a custom class only if its module was imported, and users
    write ``import tfdropblock`` and nothing else. Importing the layers here would import
    TensorFlow (seconds) for ``tfdropblock --help`` too, since the console script imports this
    package; Keras is what TensorFlow costs, so the layers are imported when Keras is: now if it
    already is, else right after it.
    """
    if "keras" in sys.modules:
        importlib.import_module(layers_module)
    elif not any(isinstance(f, _AfterKerasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasFinder(
            lambda: importlib.import_module(layers_module)))
