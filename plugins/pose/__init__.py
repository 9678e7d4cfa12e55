"""pose plugins."""
