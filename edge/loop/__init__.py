"""The device loop: the pipeline over audio and video sources, its scheduler and its statistics."""
