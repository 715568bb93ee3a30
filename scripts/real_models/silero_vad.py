"""Silero VAD (voice activity detection): a streaming model with a recurrent state, exported from PyTorch.

Ships in the wheel ``silero-vad`` 6.2.3 (MIT) as ``silero_vad_16k_op15.onnx``:
opset 15, exported by torch 2.3; six Convs (an STFT, the encoder, the
decoder's head) in the main graph, the LSTM inside ``If`` nodes. Inputs:
``input`` [batch, 576] float32 (the last 64 samples of the previous chunk,
then 512 new ones at 16 kHz, as the package's own wrapper feeds it),
``state`` [2, batch, 128] (the batch on axis 1) and ``sr``, a scalar int64
(16000). Outputs: ``output`` [batch, 1], the speech probability, and
``stateN``, the next state; both are judged. The package's default
``silero_vad.onnx`` puts the whole graph inside one ``If`` on the sample
rate, where ONNX Runtime's static quantization does not reach.

Data: sentences from the standard library's docstrings spoken by espeak-ng
(a Debian package: ``apt-get install -y espeak-ng``), resampled to 16 kHz,
with silence and low noise around them, cut into chunks. Each chunk's
``state`` is the one the float model carries into it when its clip streams
through from a zero state: that is what the model sees when deployed (zeros
reach only a stream's first chunk), so calibration covers the state's real range.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

NAME = "silero-vad"
KIND = "voice activity detector (LSTM) · PyTorch → ONNX · opset 15 · state [2, batch, 128], scalar sample rate"
WHEEL = ("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx")
RATE = 16000
CONTEXT, HOP = 64, 512  # samples of the previous chunk, new samples per chunk
STATE = 128
VOICES = ("en-us", "en", "en+f3", "en+m3", "en-gb-scotland", "en+f4")
CLIPS = 32
BATCH = 32

RECIPE_NAME = "silero-vad-int8"
INPUTS = (
    f"{{name: state, shape: [2, batch, {STATE}], dtype: float32}}",
    f"{{name: sr, shape: [], dtype: int64, value: {RATE}}}",
)


def model(cache: Path) -> Path:
    from corpus import wheel_file

    return wheel_file(*WHEEL, cache)


def espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise SystemExit("silero_vad: espeak-ng is not installed (a Debian package: apt-get install -y espeak-ng)")
    return found


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """``text`` spoken by espeak-ng: float32, mono, 16 kHz."""
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        command = [espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text]
        subprocess.run(command, check=True, capture_output=True)
        with wave.open(str(path)) as audio:
            rate = audio.getframerate()
            pcm = np.frombuffer(audio.readframes(audio.getnframes()), dtype=np.int16)
    common = math.gcd(RATE, rate)
    return resample_poly(pcm.astype(np.float32) / 32768.0, RATE // common, rate // common).astype(np.float32)


def clips(count: int, offset: int, seed: int) -> np.ndarray:
    """``count`` clips [count, samples]: silence, one spoken sentence, silence, all under low noise; equal lengths."""
    from minilm import docstring_sentences

    rng = np.random.default_rng(seed)
    sentences = docstring_sentences()[offset : offset + count]
    parts = []
    for i, sentence in enumerate(sentences):
        voice = VOICES[i % len(VOICES)]
        speech = speak(sentence, voice, speed=int(rng.integers(130, 200)), pitch=int(rng.integers(30, 70)))
        speech *= rng.uniform(0.2, 0.9) / max(1e-6, float(np.abs(speech).max()))
        lead, tail = (np.zeros(int(rng.uniform(0.3, 1.5) * RATE), np.float32) for _ in range(2))
        parts.append(np.concatenate([lead, speech, tail]))
    chunks = max(math.ceil(len(p) / HOP) for p in parts)
    audio = np.zeros((len(parts), chunks * HOP), np.float32)
    for row, part in zip(audio, parts, strict=True):
        row[: len(part)] = part
    noise = rng.uniform(0.001, 0.01, (len(parts), 1)) * rng.standard_normal(audio.shape)
    return (audio + noise).astype(np.float32)


def stream(path: Path, audio: np.ndarray) -> dict[str, np.ndarray]:
    """Every chunk of every clip with the state the float model carries into it, and the float speech probability."""
    from compressctl.measure.latency import make_session

    session = make_session(path)
    count = len(audio)
    state = np.zeros((2, count, STATE), np.float32)
    context = np.zeros((count, CONTEXT), np.float32)
    inputs, states, probs = [], [], []
    for start in range(0, audio.shape[1], HOP):
        x = np.concatenate([context, audio[:, start : start + HOP]], axis=1)
        inputs.append(x)
        states.append(state)
        prob, state = session.run(None, {"input": x, "state": state, "sr": np.array(RATE, np.int64)})
        probs.append(prob.reshape(-1))
        context = x[:, -CONTEXT:]
    return {
        "input": np.concatenate(inputs),
        "state": np.concatenate(states, axis=1),  # the batch sits on axis 1, as the model takes it
        "probability": np.concatenate(probs),
    }


def chunks(cache: Path, count: int, offset: int, seed: int) -> dict[str, np.ndarray]:
    return stream(model(cache), clips(count, offset, seed))


def prepare(folder: Path, cache: Path) -> Path:
    espeak()
    found = chunks(cache, CLIPS, offset=0, seed=0)
    speech = float((found.pop("probability") > 0.5).mean())
    print(f"{NAME}: {len(found['input'])} chunks, {speech:.0%} of them speech to the float model", file=sys.stderr)
    data = folder / "silero-vad-chunks.npz"
    np.savez(data, **found)
    from corpus import onnx_recipe

    recipe = folder / f"{RECIPE_NAME}.yaml"
    recipe.write_text(
        onnx_recipe(
            RECIPE_NAME,
            model(cache),
            "input",
            f"{CONTEXT + HOP}",
            data,
            data_batch=64,
            metric="fidelity",
            batch=BATCH,
            more_inputs=INPUTS,
        )
    )
    return recipe


def held_out(cache: Path) -> dict[str, np.ndarray]:
    found = chunks(cache, 8, offset=CLIPS, seed=100)
    return {"input": found["input"], "state": found["state"]}
