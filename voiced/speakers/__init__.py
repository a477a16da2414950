"""Speaker identification."""
