"""Where events go: JSON Lines, callbacks, MQTT and the at-least-once spool."""
