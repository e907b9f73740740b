"""Pretrained teachers (desktop only): frozen feature models with small heads trained here,
whose outputs the compact student learns from (docs/TRAINING.md, "Teachers")."""
