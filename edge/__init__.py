"""EdgeSense device side: feature frontend, LiteRT runtime, sources, device loop.

Nothing in this package imports TensorFlow: it runs with numpy, OpenCV,
sounddevice and a LiteRT interpreter only.
"""

__version__ = "0.1.0"


def extra_hint(extra: str) -> str:
    """How to add an extra. EdgeSense is installed from its checkout, a wheel or a deploy bundle,
    never by name from PyPI (where "edgesense" is somebody else's project)."""
    return f"from the EdgeSense checkout: pip install -e '.[{extra}]' (or scripts/setup.sh)"
