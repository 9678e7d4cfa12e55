"""detectors plugins."""
