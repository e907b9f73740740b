"""``edgesense bench`` (desktop): accuracy, latency, streaming and reference models, and the report."""
