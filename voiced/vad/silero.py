"""Voice activity detection with silero-vad's model, run in numpy (`vad.engine: silero`).

The weights ship inside the `silero-vad` wheel (`silero_vad/data/silero_vad.jit`, the
model its own `load_silero_vad()` loads; MIT licence); nothing is downloaded, and they are
read from the archive without torch. The network is small (an STFT as a convolution, four
convolutions, one LSTM cell, a 1×1 convolution): run here in numpy with its state held
by the caller, so every site keeps its own state, one copy of the weights serves all of
them, and no torch thread pool is woken for every 32 ms of audio. `SileroModel.step`
matches the package's own TorchScript model (`tests/vad/test_silero.py` compares them).

Each step reads 512 new samples (32 ms at 16 kHz) after the last 64 samples of the step
before, and gives the probability that the window holds speech. `SileroVad` turns the
20 ms frames voiced uses into such windows and the probabilities into per-frame
decisions with hysteresis (speech from `threshold`, silence under `threshold - 0.15`, as
silero's own `VADIterator`). Each site steps its own stream as its frames arrive:
`step` takes a batch, but stepping the event loop's streams together (each site awaiting
its window's turn) made 20 satellites fall behind real time (docs/accuracy.md).
"""

from __future__ import annotations

import importlib.util
import pickle
import threading
import zipfile
from pathlib import Path

import numpy as np

from voiced.const import SAMPLE_WIDTH
from voiced.errors import AudioFormatError, ConfigError

WINDOW = 512
"""New samples per step (16 kHz)."""
CONTEXT = 64
"""Samples of the step before that each step sees again."""
_PAD = 64
_N_FFT = 256
_HOP = 128
_HIDDEN = 128
_WEIGHTS = "silero_vad.jit"
_TENSORS = {
    "stft": "_model.stft.forward_basis_buffer",
    **{f"conv{i + 1}.{p}": f"_model.encoder.{i}.reparam_conv.{p}"
       for i in range(4) for p in ("weight", "bias")},
    **{f"lstm.{p}": f"_model.decoder.rnn.{p}"
       for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "out.weight": "_model.decoder.decoder.2.weight",
    "out.bias": "_model.decoder.decoder.2.bias",
}
"""voiced's names → the 16 kHz network's tensors in silero's TorchScript file."""


def weights_path() -> Path:
    """silero's TorchScript model inside the installed silero-vad package (the one its
    own `load_silero_vad()` loads).

    Raises ConfigError when the package (a locked dependency) is missing.
    """
    # found, not imported: the package's __init__ imports torch and sets its threads
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("silero_model", "vad.engine: silero needs the silero-vad package "
                          "(it is in uv.lock; run `make setup`)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    path = data / _WEIGHTS
    if not path.is_file():
        raise ConfigError("silero_model",
                          f"vad.engine: silero: {path} is missing from the silero-vad package")
    return path


class _Stub:
    """Any pickled object of the TorchScript file: only its state is kept."""

    state: object = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        self.state = state


_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "LongStorage": "<i8",
           "IntStorage": "<i4", "BoolStorage": "?"}


def read_torchscript_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor attribute of a TorchScript archive, by dotted path ("_model.encoder.0…").

    Read with a restricted unpickler: it resolves no class or function of any module
    (each pickled object becomes a stub holding its state; tensors are rebuilt from the
    archive's raw storages), so nothing in the file runs, and torch is not imported.
    """
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
        prefix = next(n for n in names if n.endswith("/data.pkl"))[:-len("data.pkl")]
    except (OSError, zipfile.BadZipFile, StopIteration) as exc:
        raise ConfigError("silero_model", f"{path}: not a TorchScript archive ({exc})") from exc

    def tensor(storage: tuple[str, str], offset: int, size: tuple[int, ...],
               stride: tuple[int, ...], *rest: object) -> np.ndarray:
        kind, key = storage
        if kind not in _DTYPES:
            raise ConfigError("silero_model", f"{path}: tensor storage {kind} is not supported")
        flat = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=_DTYPES[kind])
        item = flat.itemsize
        return np.lib.stride_tricks.as_strided(
            flat[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)).copy()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return tensor
            if module == "torch" and name.endswith("Storage"):
                return name
            if (module, name) == ("collections", "OrderedDict"):
                return dict
            return type(name, (_Stub,), {})

        def persistent_load(self, pid: object) -> object:
            if not isinstance(pid, tuple) or len(pid) < 3 or pid[0] != "storage":
                raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
            return (pid[1], str(pid[2]))

    try:
        with archive.open(f"{prefix}data.pkl") as handle:
            root = Unpickler(handle).load()
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as exc:
        raise ConfigError("silero_model", f"{path}: cannot read its tensors ({exc})") from exc
    found: dict[str, np.ndarray] = {}

    def walk(obj: object, where: str) -> None:
        state = obj.state if isinstance(obj, _Stub) else None
        if isinstance(state, dict):
            for key, value in state.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(value, np.ndarray):
                    found[name] = value
                else:
                    walk(value, name)

    walk(root, "")
    return found


def read_weights(path: Path | None = None) -> dict[str, np.ndarray]:
    """The 16 kHz network's float32 tensors, by voiced's names (`_TENSORS`)."""
    path = path or weights_path()
    tensors = read_torchscript_tensors(path)
    missing = [source for source in _TENSORS.values() if source not in tensors]
    if missing:
        raise ConfigError("silero_model", f"{path}: no tensor {', '.join(missing)} (a "
                          f"silero-vad version voiced does not know)")
    return {name: tensors[source].astype(np.float32) for name, source in _TENSORS.items()}


def _conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1,
            pad: int = 0) -> np.ndarray:
    """x [B, C, T] * w [O, C, K] (+ b [O]) → [B, O, T'] (zero padding)."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    out_ch, in_ch, k = w.shape
    steps = (x.shape[2] - k) // stride + 1
    cols = np.stack([x[:, :, i:i + stride * (steps - 1) + 1:stride] for i in range(k)],
                    axis=-1)  # [B, C, T', K]
    cols = cols.transpose(0, 2, 1, 3).reshape(x.shape[0] * steps, in_ch * k)
    y = (cols @ w.reshape(out_ch, in_ch * k).T).reshape(x.shape[0], steps, out_ch)
    if b is not None:
        y += b
    return y.transpose(0, 2, 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class SileroModel:
    """silero-vad's 16 kHz network; stateless itself (the caller holds each stream's state)."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        missing = [name for name in _TENSORS if name not in tensors]
        if missing:
            raise ConfigError("silero_model", f"silero-vad weights lack {', '.join(missing)}")
        t = tensors
        self._stft = t["stft"][:, 0, :].T.copy()  # [256, 258]
        # the input padded on the right by reflection (as torch's "reflect"), cut into
        # frames of 256 every 128 samples: one index array
        size = CONTEXT + WINDOW
        padded = np.concatenate([np.arange(size), size - 2 - np.arange(_PAD)])
        starts = np.arange(0, size + _PAD - _N_FFT + 1, _HOP)
        self._gather = padded[starts[:, None] + np.arange(_N_FFT)[None, :]]
        # the four convolutions see a fixed length (4 STFT frames → 4, 2, 1, 1): each is
        # one dense matrix on the flattened [channels × time] input, built once
        length = len(starts)
        self._dense: list[tuple[np.ndarray, np.ndarray]] = []
        for i, stride in ((1, 1), (2, 2), (3, 2), (4, 1)):
            w, b = t[f"conv{i}.weight"], t[f"conv{i}.bias"]
            size = w.shape[1] * length
            basis = np.eye(size, dtype=np.float32).reshape(size, w.shape[1], length)
            out = _conv1d(basis, w, None, stride=stride, pad=1)  # [size, O, T']
            length = out.shape[2]
            self._dense.append((out.reshape(size, -1).copy(), np.repeat(b, length)))
        self._length = length
        self._w_ih = t["lstm.weight_ih"].T.copy()
        self._w_hh = t["lstm.weight_hh"].T.copy()
        self._b = t["lstm.bias_ih"] + t["lstm.bias_hh"]
        self._out_w = t["out.weight"][:, :, 0].T.copy()  # [128, 1]
        self._out_b = t["out.bias"]

    @staticmethod
    def new_state(batch: int = 1) -> np.ndarray:
        """A stream's state before its first step: [2 (h, c), batch, 128] zeros."""
        return np.zeros((2, batch, _HIDDEN), dtype=np.float32)

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step for a batch of streams.

        x: [B, CONTEXT + WINDOW] float32 samples in [-1, 1] (the last CONTEXT samples of
        the previous window, then the new one); state: [2, B, 128].
        Returns (speech probability [B], the new state).
        """
        if x.ndim != 2 or x.shape[1] != CONTEXT + WINDOW:
            raise ValueError(f"expected [batch, {CONTEXT + WINDOW}] samples, got {x.shape}")
        batch = x.shape[0]
        frames = x[:, self._gather]  # [B, frames, 256]: reflect-padded STFT frames
        spec = frames @ self._stft  # [B, frames, 258]
        half = _N_FFT // 2 + 1
        mag = np.sqrt(spec[:, :, :half] ** 2 + spec[:, :, half:] ** 2)
        h = mag.transpose(0, 2, 1).reshape(batch, -1)  # [B, 129 × frames], channel-major
        for dense, bias in self._dense:
            h = np.maximum(h @ dense + bias, 0.0)
        feat = h.reshape(batch, _HIDDEN, self._length).mean(axis=2)
        h_prev, c_prev = state[0], state[1]
        gates = feat @ self._w_ih + h_prev @ self._w_hh + self._b
        n = _HIDDEN
        sig = _sigmoid(gates[:, :2 * n])
        c = sig[:, n:] * c_prev + sig[:, :n] * np.tanh(gates[:, 2 * n:3 * n])
        h_new = _sigmoid(gates[:, 3 * n:]) * np.tanh(c)
        logit = np.maximum(h_new, 0.0) @ self._out_w + self._out_b
        prob = _sigmoid(logit)[:, 0]
        return prob.astype(np.float32), np.stack([h_new, c]).astype(np.float32)


_model: SileroModel | None = None
_lock = threading.Lock()


def shared_model() -> SileroModel:
    """The process's one copy of the weights (read on first use)."""
    global _model
    with _lock:
        if _model is None:
            _model = SileroModel(read_weights())
        return _model


class SileroVad:
    """Per-frame speech decisions for one stream (the same interface as `WebrtcVad`).

    Frames of any whole number of samples are collected into 512-sample windows; a frame
    is judged by the newest window's probability, with hysteresis.
    """

    def __init__(self, threshold: float = 0.5, model: SileroModel | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.threshold = threshold
        self.off_threshold = max(threshold - 0.15, 0.01)
        self._model = model or shared_model()
        self._state = SileroModel.new_state()
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._speech = False
        self.probability = 0.0
        """The newest window's speech probability."""

    def _windows(self, frame: bytes) -> list[np.ndarray]:
        """The network's inputs ([CONTEXT + WINDOW]) that this frame completes."""
        if not frame or len(frame) % SAMPLE_WIDTH:
            raise AudioFormatError("vad_frame_size",
                                   f"VAD frame is {len(frame)} bytes; expected whole "
                                   f"16-bit samples")
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        pending = np.concatenate([self._pending, samples])
        ready = []
        while len(pending) >= WINDOW:
            window, pending = pending[:WINDOW], pending[WINDOW:]
            ready.append(np.concatenate([self._context, window]))
            self._context = window[-CONTEXT:]
        self._pending = pending
        return ready

    def _heard(self, probability: float) -> None:
        self.probability = probability
        if probability >= self.threshold:
            self._speech = True
        elif probability < self.off_threshold:
            self._speech = False

    def is_speech(self, frame: bytes) -> bool:
        """True while the stream is judged to hold speech (16 kHz, 16-bit mono frame)."""
        for x in self._windows(frame):
            prob, self._state = self._model.step(x[None, :], self._state)
            self._heard(float(prob[0]))
        return self._speech
