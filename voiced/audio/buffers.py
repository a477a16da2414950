"""Re-framing: satellites send chunks of any size, the VAD needs fixed frames."""

from __future__ import annotations


class FrameBuffer:
    """Cuts a byte stream into frames of exactly `frame_bytes`, keeping the remainder."""

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        """Size of every frame returned by `push` (bytes)."""
        self._buf = bytearray()

    def push(self, pcm: bytes) -> list[bytes]:
        """Append `pcm`; return every complete frame now available, oldest first."""
        self._buf += pcm
        n = len(self._buf) // self.frame_bytes
        if not n:
            return []
        size = self.frame_bytes
        frames = [bytes(self._buf[i * size : (i + 1) * size]) for i in range(n)]
        del self._buf[: n * size]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the rest of a frame (always < frame_bytes)."""
        return len(self._buf)

    def clear(self) -> None:
        """Drop the held-back bytes."""
        self._buf.clear()
