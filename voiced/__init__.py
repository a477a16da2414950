"""voiced: a private home voice server.

Importing this package is cheap: heavy libraries (torch, pocketsphinx, webrtcvad) are
imported inside the backends that need them.
"""

__version__ = "0.1.0"
