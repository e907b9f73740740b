"""Strict configuration files: the one YAML 1.2 loader, and dataclass options built and checked from mappings."""
