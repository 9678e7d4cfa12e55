"""blazepose."""
