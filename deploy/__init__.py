"""``edgesense deploy`` (desktop): a self-contained install bundle for a Raspberry Pi, a Jetson or a desktop."""
