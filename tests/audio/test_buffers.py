"""FrameBuffer: any chunk size in, fixed frames out."""

from __future__ import annotations

import pytest

from voiced.audio.buffers import FrameBuffer
from voiced.const import VAD_FRAME_BYTES


def test_frames_come_out_whole_and_in_order() -> None:
    buf = FrameBuffer(4)
    assert buf.push(b"abc") == []
    assert buf.pending == 3
    assert buf.push(b"defghij") == [b"abcd", b"efgh"]
    assert buf.pending == 2
    assert buf.push(b"kl") == [b"ijkl"]
    assert buf.pending == 0


def test_rhasspy_sized_chunks_reframe_without_loss() -> None:
    stream = bytes(i % 251 for i in range(2048 * 7))
    buf = FrameBuffer(VAD_FRAME_BYTES)
    frames = [f for i in range(0, len(stream), 2048) for f in buf.push(stream[i : i + 2048])]
    assert all(len(f) == VAD_FRAME_BYTES for f in frames)
    assert len(frames) == len(stream) // VAD_FRAME_BYTES
    assert b"".join(frames) + stream[len(stream) - buf.pending :] == stream


def test_clear_drops_the_remainder() -> None:
    buf = FrameBuffer(4)
    buf.push(b"xy")
    buf.clear()
    assert buf.pending == 0
    assert buf.push(b"abcd") == [b"abcd"]


def test_frame_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameBuffer(0)
