"""Conversion of a training run to int8 TFLite, and int8 parity checks (needs the [train] extra)."""
