"""Intent recognition (hassil), the handler router and the plugin API."""
