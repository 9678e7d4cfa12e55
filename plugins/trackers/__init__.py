"""trackers plugins."""
