"""simcc."""
