"""The application: the ``edgesense`` command line, ``run``, ``inspect`` and the ``demo`` window with its overlay."""
