"""The device config: one YAML file whose sections are the options of the loop's components."""
