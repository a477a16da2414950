"""Speech recognition backends."""
