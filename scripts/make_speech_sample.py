"""Rebuild samples/speech.mp4: the first 10 s of samples/bikes.mp4 at 320x136 with a spoken
sentence (Debian's espeak-ng) from 1.0 s on, as AAC at espeak's 22.05 kHz (so the tests' reader
resamples, as it must for any real file).

    python scripts/make_speech_sample.py [OUT]    # needs espeak-ng (scripts/system-deps.sh)

Only this script needs espeak-ng; the tests read the committed file.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = ("The quick brown fox jumps over the lazy dog. "
            "Bicycles ride down the busy street in the morning sun.")
SPEECH_AT_S = 1.0
SECONDS = 10.0


def speak(text: str) -> tuple[np.ndarray, int]:
    """espeak-ng's voice for ``text``: int16 mono samples and their rate."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text],
                       check=True)
        with av.open(str(wav)) as container:
            stream = container.streams.audio[0]
            rate = stream.rate
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    return samples.astype(np.int16), rate


def main(out: Path) -> None:
    voice, rate = speak(SENTENCE)
    track = np.zeros(int(SECONDS * rate), dtype=np.float32)
    at = int(SPEECH_AT_S * rate)
    track[at:at + len(voice)] = voice[: len(track) - at].astype(np.float32) / 32768
    with av.open(str(ROOT / "samples" / "bikes.mp4")) as src, av.open(str(out), "w") as dst:
        video = dst.add_stream("libx264", rate=25, options={"crf": "30", "preset": "slow"})
        video.width, video.height, video.pix_fmt = 320, 136, "yuv420p"
        audio = dst.add_stream("aac", rate=rate, options={"b": "48k"})
        audio.layout = "mono"
        for frame in src.decode(video=0):
            if frame.time >= SECONDS:
                break
            small = frame.reformat(320, 136, "yuv420p")
            small.pts, small.time_base = frame.pts, frame.time_base
            dst.mux(video.encode(small))
        dst.mux(video.encode(None))
        size = audio.codec_context.frame_size
        for start in range(0, len(track), size):
            chunk = np.zeros(size, dtype=np.float32)
            part = track[start:start + size]
            chunk[: len(part)] = part
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            dst.mux(audio.encode(frame))
        dst.mux(audio.encode(None))
    print(f"{out}: {out.stat().st_size} bytes, speech {SPEECH_AT_S:.1f}-"
          f"{SPEECH_AT_S + len(voice) / rate:.2f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "samples" / "speech.mp4")
