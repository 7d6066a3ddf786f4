"""The base every layer may use: errors, messages and progress, the run's frozen
configuration, the device, paths, atomic writes."""
