"""EdgeSense device side: feature frontend, LiteRT runtime, sources, device loop.

Nothing in this package imports TensorFlow: it runs with numpy, OpenCV,
sounddevice and a LiteRT interpreter only.
"""

__version__ = "0.1.0"


def editable_install(extra: str) -> str:
    """The command that adds ``extra`` to a checkout's install. Strict, as ``scripts/setup.sh``
    installs: a plain ``pip install -e`` over it leaves the shipped configs, models and samples
    (:mod:`edgesense.shipped`) where the package cannot find them."""
    return f"pip install -e '.[{extra}]' --config-settings editable_mode=strict"


def extra_hint(extra: str) -> str:
    """How to add an extra. EdgeSense is installed from its checkout, a wheel or a deploy bundle,
    never by name from PyPI (where "edgesense" is somebody else's project)."""
    return (f"from the EdgeSense checkout: {editable_install(extra)} (or scripts/setup.sh); from a wheel: "
            f"pip install 'edgesense-{__version__}-py3-none-any.whl[{extra}]'")
