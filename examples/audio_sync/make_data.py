#!/usr/bin/env python3
"""Make sample data for the audio-sync example: master/dub pairs that differ the way real dubs do.

A dub is not a shifted copy of its master. Both share the music-and-effects (M&E) bed, as a dubbed
film does, but each has its own dialogue track (another speaker, other syllables, sentences only roughly
where the original's are), its own mix (bed and voice gains, an EQ), its own noise, a few dropouts, and
sometimes another sample rate or file format. The dub runs late or early by an offset between -20 s and
+20 s; the first pair is seed 004's 15 s.

Writes to OUT:
  master_NN.wav|.flac, dub_NN.wav|.flac   the pairs (mono, 16-bit)
  batch.csv    seed 004's CSV shape: master_file,dub_file,methods,ai_model,description,tags
  truth.csv    per pair the true offset (``offset_seconds``: the shift to apply to the dub; negative when the
               dub is late) and how the pair was made
  With --containers mov,mp4: master_NN.mov / dub_NN.mp4 ... too (ffmpeg), and batch_containers.csv.

    python examples/audio_sync/make_data.py --out examples/audio_sync/data --pairs 20
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

MAX_OFFSET = 20.0
SEED_OFFSET = -15.0  # seed 004's "_15sec" dubs: the dub runs 15 s late
VOICE_DB, HARD_VOICE_DB = (0.0, 10.0), (8.0, 16.0)  # dialogue level over the M&E bed
SNR_DB, HARD_SNR_DB = (12.0, 30.0), (3.0, 10.0)  # noise, below the mix
METHOD_CELLS = ("", "mfcc,onset", "spectral,correlation", "mfcc", "onset,spectral")


@dataclass
class PairInfo:
    master_file: str
    dub_file: str
    offset_seconds: float
    master_rate: int
    dub_rate: int
    voice_to_bed_db: float
    snr_db: float
    dropouts: int
    dub_eq: str


# -- sources ---------------------------------------------------------------------------------------


def _envelope(n: int, fs: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / fs
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / decay)


def _add(buf: np.ndarray, start: int, seg: np.ndarray) -> None:
    if start >= len(buf) or start + len(seg) <= 0:
        return
    lo = max(0, -start)
    hi = min(len(seg), len(buf) - start)
    buf[start + lo:start + hi] += seg[lo:hi]


def _tone(freq: float, n: int, fs: int, partials: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / fs
    out = np.zeros(n)
    for k in range(1, partials + 1):
        if freq * k < fs / 2 * 0.9:
            out += np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 2 * np.pi)) / k
    return out


def music(rng: np.random.Generator, n: int, fs: int) -> np.ndarray:
    """Melody, bass and drums from random (never looping) note choices at a random tempo."""
    out = np.zeros(n)
    beat = 60.0 / rng.uniform(80, 140)
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16, 19, 21]) / 12)
    t = 0.0
    while t < n / fs:  # melody: random notes and rests of 1/2 to 2 beats
        dur = beat * rng.choice([0.5, 1, 1, 1.5, 2])
        if rng.random() > 0.2:
            m = int(dur * fs * 1.3)
            note = _tone(rng.choice(scale), m, fs, 5, rng) * _envelope(m, fs, 0.01, dur * 0.5)
            _add(out, int(t * fs), 0.5 * note)
        t += dur
    t = 0.0
    while t < n / fs:  # bass: a root per bar, sometimes split
        bar = beat * 4
        for part in ([bar] if rng.random() < 0.6 else [bar / 2, bar / 2]):
            m = int(part * fs)
            note = _tone(rng.choice(scale[:5]) / 4, m, fs, 3, rng) * _envelope(m, fs, 0.02, part * 0.6)
            _add(out, int(t * fs), 0.6 * note)
            t += part
    t = 0.0
    while t < n / fs:  # drums on the beat grid, with random omissions and fills
        for sub in range(4):
            at = int((t + sub * beat / 4 + rng.normal(0, 0.004)) * fs)
            if sub == 0 and rng.random() < 0.8:  # kick: a falling sine
                m = int(0.25 * fs)
                tt = np.arange(m) / fs
                kick = np.sin(2 * np.pi * (50 * tt + 60 * (1 - np.exp(-tt * 30)) / 30)) * np.exp(-tt / 0.08)
                _add(out, at, 0.9 * kick)
            elif sub == 2 and rng.random() < 0.5:  # snare: a noise burst
                m = int(0.15 * fs)
                _add(out, at, 0.4 * rng.standard_normal(m) * _envelope(m, fs, 0.001, 0.04))
            elif rng.random() < 0.3:  # hat
                m = int(0.05 * fs)
                hat = np.diff(rng.standard_normal(m + 1)) * _envelope(m, fs, 0.0005, 0.01)
                _add(out, at, 0.2 * hat)
        t += beat
    # The score swells and fades: cues, not a constant loop
    swell = np.interp(np.arange(n), np.linspace(0, n, 12), rng.uniform(0.3, 1.0, 12))
    return out * swell


def effects(rng: np.random.Generator, n: int, fs: int) -> np.ndarray:
    """Impacts and whooshes at random times, over a quiet ambience."""
    out = np.zeros(n)
    t = rng.exponential(2.0)
    b_lo, a_lo = signal.butter(2, min(0.9, 1500 / (fs / 2)))
    while t < n / fs:
        if rng.random() < 0.6:  # impact
            m = int(rng.uniform(0.1, 0.5) * fs)
            hit = signal.lfilter(b_lo, a_lo, rng.standard_normal(m)) * _envelope(m, fs, 0.002, m / fs / 4)
            _add(out, int(t * fs), rng.uniform(0.5, 1.5) * hit)
        else:  # whoosh: band-passed noise, rising and falling
            m = int(rng.uniform(0.5, 1.5) * fs)
            lo = rng.uniform(200, 800)
            b, a = signal.butter(2, [lo / (fs / 2), min(0.95, 3 * lo / (fs / 2))], btype="band")
            _add(out, int(t * fs), 0.6 * signal.lfilter(b, a, rng.standard_normal(m)) * np.hanning(m))
        t += rng.exponential(2.0)
    b_amb, a_amb = signal.butter(1, 400 / (fs / 2))
    return out + 0.05 * signal.lfilter(b_amb, a_amb, rng.standard_normal(n))


def _resonator(freq: float, bw: float, fs: int) -> tuple[np.ndarray, np.ndarray]:
    r = math.exp(-math.pi * bw / fs)
    return np.array([1 - r]), np.array([1.0, -2 * r * math.cos(2 * math.pi * freq / fs), r * r])


def voice(rng: np.random.Generator, n: int, fs: int, sentences: list[tuple[float, float]], f0: float) -> np.ndarray:
    """Speech-like dialogue: syllables of a pulse train through moving formants, with fricatives, in sentences."""
    out = np.zeros(n)
    vowels = [(730, 1090), (270, 2290), (300, 870), (530, 1840), (640, 1190), (490, 1350), (400, 2000)]
    b_fric, a_fric = signal.butter(2, min(0.95, 2500 / (fs / 2)), btype="high")
    for start, length in sentences:
        t = start
        while t < start + length:
            syl = rng.uniform(0.12, 0.3)
            at = int(t * fs)
            if rng.random() < 0.35:  # a fricative onset
                m = int(rng.uniform(0.04, 0.1) * fs)
                _add(out, at, 0.15 * signal.lfilter(b_fric, a_fric, rng.standard_normal(m)) * np.hanning(m))
                at += m
            m = int(syl * fs)
            pitch = f0 * (1 + 0.15 * math.sin(2 * math.pi * (t - start) / max(length, 0.5))) * rng.uniform(0.9, 1.1)
            phase = np.cumsum(np.full(m, pitch / fs) * np.linspace(1.05, 0.95, m))
            pulses = np.diff(np.floor(phase), prepend=0.0)
            f1, f2 = vowels[rng.integers(len(vowels))]
            src = np.zeros(m)
            for freq, bw, gain in ((f1, 80, 1.0), (f2, 120, 0.6), (2700, 200, 0.25)):
                if freq < fs / 2 * 0.95:
                    b, a = _resonator(freq, bw, fs)
                    src += gain * signal.lfilter(b, a, pulses)
            _add(out, at, src * np.hanning(m) * 8)
            t += syl + rng.uniform(0.0, 0.08) + (rng.uniform(0.1, 0.25) if rng.random() < 0.2 else 0.0)
    return out


def sentences_for(rng: np.random.Generator, seconds: float) -> list[tuple[float, float]]:
    out, t = [], rng.uniform(0, 2)
    while t < seconds:
        length = rng.uniform(1.2, 4.0)
        out.append((t, length))
        t += length + rng.uniform(0.4, 2.5)
    return out


def dubbed_sentences(rng: np.random.Generator, original: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A dub's lines go roughly where the original's are (lip sync), never exactly."""
    return [(max(0.0, s + rng.normal(0, 0.25)), length * rng.uniform(0.8, 1.2)) for s, length in original]


# -- mixing ----------------------------------------------------------------------------------------


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)) + 1e-12)


def eq(rng: np.random.Generator, x: np.ndarray, fs: int) -> tuple[np.ndarray, str]:
    """A different mix: low and high shelves by a few dB, sometimes a band limit (an old transfer)."""
    b_lo, a_lo = signal.butter(2, 300 / (fs / 2))
    b_hi, a_hi = signal.butter(2, min(0.9, 2000 / (fs / 2)), btype="high")
    lo_db, hi_db = rng.uniform(-6, 6), rng.uniform(-6, 6)
    y = x + (10 ** (lo_db / 20) - 1) * signal.lfilter(b_lo, a_lo, x) + (10 ** (hi_db / 20) - 1) * signal.lfilter(
        b_hi, a_hi, x)
    label = f"low {lo_db:+.1f} dB, high {hi_db:+.1f} dB"
    if rng.random() < 0.3 and fs > 7000:
        b, a = signal.butter(4, 3400 / (fs / 2))
        y = signal.lfilter(b, a, y)
        label += ", band-limited 3.4 kHz"
    return y, label


def dropouts(rng: np.random.Generator, x: np.ndarray, fs: int, count: int) -> None:
    """Digital dropouts: short stretches of silence or near-silence."""
    for _ in range(count):
        m = int(rng.uniform(0.03, 0.8) * fs)
        at = int(rng.integers(0, max(1, len(x) - m)))
        x[at:at + m] *= 0.0 if rng.random() < 0.7 else 0.03


def make_pair(rng: np.random.Generator, seconds: float, fs: int, offset: float, hard: bool = False
              ) -> tuple[np.ndarray, np.ndarray, float, dict[str, float | int | str]]:
    """(master, dub, true offset in seconds on the sample grid, how it was made) at rate ``fs``.

    The programme runs ``MAX_OFFSET`` seconds beyond both ends of the master; the dub's window into it is
    shifted by ``-offset`` (a negative offset: the dub is late). ``hard``: dialogue far above the bed and
    loud noise, to see where each method gives up.
    """
    delay = round(-offset * fs)  # dub samples of lateness
    pad = int((MAX_OFFSET + 1) * fs)
    n = int(seconds * fs)
    total = n + 2 * pad
    score, sfx = music(rng, total, fs), effects(rng, total, fs)
    lines = sentences_for(rng, total / fs)
    voice_a = voice(rng, total, fs, lines, f0=rng.uniform(95, 140))
    voice_b = voice(rng, total, fs, dubbed_sentences(rng, lines), f0=rng.uniform(170, 240))
    # Sound recorded on set with the original dialogue is not in the M&E: the master has it, the dub has
    # foley re-recorded for it, at other moments.
    voice_a += 0.5 * effects(rng, total, fs)
    voice_b += 0.5 * effects(rng, total, fs)
    ratio_db = rng.uniform(*HARD_VOICE_DB if hard else VOICE_DB)  # dialogue over the bed

    def mix(start: int, vox: np.ndarray, eq_it: bool) -> tuple[np.ndarray, str]:
        # Each mix balances the music and effects stems its own way
        bed = rng.uniform(0.5, 1.2) * score[start:start + n] + rng.uniform(0.4, 1.0) * sfx[start:start + n]
        shaped, label = eq(rng, bed, fs) if eq_it else (bed, "none")
        vox = vox[start:start + n]
        vox = vox / rms(vox) * rms(shaped) * 10 ** ((ratio_db + rng.uniform(-2, 2)) / 20)
        return shaped + vox, label

    master, _ = mix(pad, voice_a, eq_it=rng.random() < 0.5)
    dub, label = mix(pad - delay, voice_b, eq_it=True)
    snr = rng.uniform(*HARD_SNR_DB if hard else SNR_DB)
    for x in (master, dub):
        x += rng.standard_normal(n) * rms(x) * 10 ** (-snr / 20)
    count = int(rng.integers(1, 5))
    dropouts(rng, dub, fs, count)
    dropouts(rng, master, fs, int(rng.integers(0, 2)))
    for x in (master, dub):
        x *= 0.5 / np.max(np.abs(x))
    info: dict[str, float | int | str] = {"voice_to_bed_db": round(ratio_db, 1), "snr_db": round(snr, 1),
                                          "dropouts": count, "dub_eq": label}
    return master, dub, -delay / fs, info


def offsets(count: int, rng: np.random.Generator) -> list[float]:
    """Seed 004's -15 s first, then spread over [-20, +20] s (ms steps), none within 1 s of zero."""
    out = [SEED_OFFSET]
    while len(out) < count:
        v = round(float(rng.uniform(-MAX_OFFSET, MAX_OFFSET)), 3)
        if abs(v) >= 1.0:
            out.append(v)
    return out


# -- files -----------------------------------------------------------------------------------------


def write_audio(path: Path, x: np.ndarray, fs: int) -> None:
    sf.write(str(path), x.astype(np.float32), fs, subtype="PCM_16")


def wrap(src: Path, dest: Path) -> None:
    """``src`` as the audio of a real container with a small video track (.mov: PCM, .mp4: AAC)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("--containers needs ffmpeg (Debian: apt-get install -y ffmpeg)")
    acodec = ["-c:a", "pcm_s16le"] if dest.suffix == ".mov" else ["-c:a", "aac", "-b:a", "96k"]
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=5",
           "-i", str(src), "-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", *acodec, "-shortest", str(dest)]
    subprocess.run(cmd, check=True)


def make(out: Path, pairs: int, seconds: float, rate: int, seed: int, containers: Sequence[str] = (),
         hard: bool = False) -> list[PairInfo]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: list[PairInfo] = []
    for i, offset in enumerate(offsets(pairs, rng), 1):
        master, dub, truth, info = make_pair(rng, seconds, rate, offset, hard)
        dub_rate = rate if i % 3 else int(rng.choice([8000, 11025, 22050]))  # some dubs at another rate
        if dub_rate != rate:
            g = math.gcd(rate, dub_rate)
            dub = signal.resample_poly(dub, dub_rate // g, rate // g)
        ext = ".flac" if i % 4 == 0 else ".wav"
        m_path, d_path = out / f"master_{i:02d}{ext}", out / f"dub_{i:02d}{ext}"
        write_audio(m_path, master, rate)
        write_audio(d_path, dub, dub_rate)
        made.append(PairInfo(str(m_path.resolve()), str(d_path.resolve()), truth, rate, dub_rate,
                             float(info["voice_to_bed_db"]), float(info["snr_db"]), int(info["dropouts"]),
                             str(info["dub_eq"])))
    write_csvs(out, made, "batch.csv", "truth.csv")
    if containers:
        wrapped = []
        for i, p in enumerate(made, 1):
            ext = "." + containers[(i - 1) % len(containers)]
            m, d = Path(p.master_file), Path(p.dub_file)
            m2, d2 = m.with_suffix(".mov"), d.with_suffix(ext)
            wrap(m, m2)
            wrap(d, d2)
            wrapped.append(PairInfo(**{**asdict(p), "master_file": str(m2), "dub_file": str(d2)}))
        write_csvs(out, wrapped, "batch_containers.csv", "truth_containers.csv")
    return made


def write_csvs(out: Path, made: list[PairInfo], batch_name: str, truth_name: str) -> None:
    with open(out / batch_name, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["master_file", "dub_file", "methods", "ai_model", "description", "tags"])
        for i, p in enumerate(made, 1):
            late = "late" if p.offset_seconds < 0 else "early"
            w.writerow([p.master_file, p.dub_file, METHOD_CELLS[(i - 1) % len(METHOD_CELLS)], "",
                        f"Synthetic pair {i}: dub {abs(p.offset_seconds):.3f} s {late}", "synthetic,sample"])
    with open(out / truth_name, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(asdict(made[0])))
        w.writeheader()
        for p in made:
            w.writerow(asdict(p))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("data"), help="Output folder.")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=45.0, help="Length of each file.")
    ap.add_argument("--rate", type=int, default=16000, help="Sample rate of the masters.")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--containers", default="", help="Also wrap pairs in these containers, e.g. mov,mp4 (ffmpeg).")
    ap.add_argument("--hard", action="store_true", help="Dialogue 8-16 dB over the bed, noise 3-10 dB below.")
    args = ap.parse_args(argv)
    if args.seconds < MAX_OFFSET + 10:  # a 20 s offset must leave at least 10 s in common
        ap.error(f"--seconds must be at least {MAX_OFFSET + 10:g}: offsets reach {MAX_OFFSET:g} s")
    containers = [c.strip().lstrip(".") for c in args.containers.split(",") if c.strip()]
    made = make(args.out, args.pairs, args.seconds, args.rate, args.seed, containers, args.hard)
    print(f"wrote {len(made)} pairs to {args.out}/ (batch.csv, truth.csv"
          + (", batch_containers.csv" if containers else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
