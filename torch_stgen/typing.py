"""Optional-dependency flags, in one place (the PyG ``torch_geometric/typing.py`` habit).

Optional packages are never imported at module top elsewhere in the library. Code that
needs one calls :func:`require`, which raises an :class:`ImportError` naming the extra
to install.
"""
import importlib.util

__all__ = ["WITH_PYKEEN", "WITH_TORCH_SCATTER", "WITH_MATPLOTLIB", "WITH_DIFFUSERS",
           "WITH_SCIPY", "WITH_PANDAS", "require"]


def _has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # pragma: no cover - broken installs
        return False


WITH_PYKEEN = _has("pykeen")
WITH_TORCH_SCATTER = _has("torch_scatter")
WITH_MATPLOTLIB = _has("matplotlib")
WITH_DIFFUSERS = _has("diffusers")
WITH_SCIPY = _has("scipy")
WITH_PANDAS = _has("pandas")

#: module name -> (pip extra, what it is used for)
_EXTRAS = {
    "pykeen": ("kg", "TuckER knowledge-graph pre-training"),
    "torch_scatter": ("scatter", "faster scatter kernels"),
    "matplotlib": ("viz", "plots"),
    "pandas": ("test", "reading pandas HDF5 speed files"),
    "diffusers": ("test", "comparing schedulers with diffusers"),
    "scipy": ("test", "reference computations"),
}


def require(module: str, feature: str = ""):
    """Import and return the optional ``module`` or raise an ``ImportError`` naming the
    extra that provides it (``pip install 'torch-stgen[EXTRA]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra, purpose = _EXTRAS.get(module, (None, ""))
        what = feature or purpose or module
        hint = (f"pip install 'torch-stgen[{extra}]'" if extra else f"pip install {module}")
        raise ImportError(f"'{module}' is required for {what} but is not installed; "
                          f"install it with: {hint}") from err
