"""Desktop side: datasets, the fusion model and its training (needs the [train] extra)."""
