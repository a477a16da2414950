"""First-party intent plugins, installed as the package `voiced_plugins`."""
