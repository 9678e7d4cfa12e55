"""sinks plugins."""
