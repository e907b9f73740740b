"""EdgeSense device side: feature frontend, LiteRT runtime, sources, device loop.

Nothing in this package imports TensorFlow: it runs with numpy, OpenCV,
sounddevice and a LiteRT interpreter only.
"""

__version__ = "0.1.0"
