"""Finding the offset of a dub against its master: reading audio, and four correlation methods.

Conventions. Both files are read as mono at ``ANALYSIS_RATE``. ``offset_seconds`` is the shift to apply to
the dub to bring it in sync with the master: negative when the dub runs late (its content comes that many
seconds after the master's), as seed 004 reports its "_15sec" dubs (-15.023).

Each method turns both signals into sequences on a common time grid and finds the lag that best aligns
them; the peak is refined to a fraction of a step by a parabola through its neighbours. Confidence is how
far the best peak stands above the best rival (outside the best peak's lobe): 1 - rival / best,
so 0 means "two places fit as well" and values near 1 mean one place fits and nothing else does.

- ``correlation``: the waveforms themselves, generalised cross-correlation with a partial phase transform
  (GCC-PHAT, spectrum magnitudes flattened by ``PHAT_BETA``): sharp peaks, sample accuracy, and an EQ
  difference between the mixes matters little.
- ``onset``: onset strength, the rectified rise of log energy in a few octave bands, every 4 ms.
- ``spectral``: spectral flux, the rectified frame-to-frame rise of every log-magnitude bin.
- ``mfcc``: 13 mel-frequency cepstral coefficients per frame (c0 dropped, each normalised), correlated as
  13 channels at once; mean removal cancels a fixed EQ difference.

The feature methods compare normalised (Pearson) correlation at every lag over the overlapping part only,
so a long overlap is not favoured over a short one; a lag whose overlap is shorter than
``MIN_OVERLAP_FRACTION`` of the shorter file is not considered.
"""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sfft
from scipy import signal

ANALYSIS_RATE = 8000
N_FFT = 256  # 32 ms frames at 8 kHz
HOP = 32  # 4 ms: fine enough for 10 ms accuracy once the peak is interpolated
PHAT_BETA = 0.8
RIVAL_GUARD_S = 0.05
AGREE_S = 0.05  # estimates this close are the same answer (about the tolerance of lip sync)
MIN_OVERLAP_FRACTION = 0.2
FRAMES_PER_CHUNK = 8192  # STFT frames computed at once: memory stays flat on long files
NATIVE = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"}
METHODS = ("correlation", "onset", "spectral", "mfcc")
LABELS = {"correlation": "Cross-correlation (GCC-PHAT)", "onset": "Onset envelope", "spectral": "Spectral flux",
          "mfcc": "MFCC"}


class AudioError(Exception):
    """A file that cannot be read as audio here: missing, not audio, or a container without ffmpeg."""


# -- reading ---------------------------------------------------------------------------------------


def load(path: str | Path, rate: int = ANALYSIS_RATE) -> np.ndarray:
    """The file's first audio stream, mixed to mono, at ``rate``, as float32.

    WAV, FLAC and the other formats libsndfile reads go through ``soundfile``, block by block; anything else
    (.mov, .mp4, .mkv, .mp3 ...) through ``ffmpeg``, which must then be installed.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such file")
    if p.suffix.lower() in NATIVE:
        try:
            return _load_native(p, rate)
        except sf.LibsndfileError as exc:
            if shutil.which("ffmpeg") is None:
                raise AudioError(f"{p}: not readable as {p.suffix} audio ({exc})") from None
    return _load_ffmpeg(p, rate)


def _load_native(p: Path, rate: int) -> np.ndarray:
    info = sf.info(str(p))
    blocks = (b.mean(axis=1) if b.ndim == 2 else b
              for b in sf.blocks(str(p), blocksize=1 << 18, dtype="float32", always_2d=True))
    out = np.concatenate(list(resample_stream(blocks, info.samplerate, rate)) or [np.zeros(0, np.float32)])
    return out.astype(np.float32, copy=False)


def _load_ffmpeg(p: Path, rate: int) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(f"{p}: reading {p.suffix or 'this'} files needs ffmpeg, which is not installed here "
                         "(Debian/Ubuntu: apt-get install ffmpeg); WAV and FLAC are read without it")
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(p), "-map", "0:a:0", "-ac", "1", "-ar", str(rate),
           "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"{p}: ffmpeg could not read an audio stream: {message[-1] if message else proc.returncode}")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def resample_stream(chunks: Iterator[np.ndarray], rate_in: int, rate_out: int) -> Iterator[np.ndarray]:
    """Polyphase resampling of a stream of chunks, equal to ``resample_poly`` of the whole signal.

    Each piece is resampled with ``CONTEXT`` input samples of its neighbours on both sides (zeros at the
    ends, as ``resample_poly`` pads), more than the filter reaches, and only its own part is kept. Pieces
    and context are multiples of the decimation factor, so the output grid lines up exactly.
    """
    if rate_in == rate_out:
        yield from chunks
        return
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    half = 10 * max(up, down) // up + 2  # resample_poly's filter half-length, in input samples
    ctx = down * -(-max(half, 64) // down)
    step = down * max(1, (1 << 18) // down)
    buf = np.zeros(ctx, np.float64)
    for chunk in chunks:
        buf = np.concatenate([buf, chunk])
        while len(buf) >= 2 * ctx + step:
            out = signal.resample_poly(buf[:2 * ctx + step], up, down)
            yield out[ctx * up // down:(ctx + step) * up // down].astype(np.float32)
            buf = buf[step:]
    rest = len(buf) - ctx
    if rest > 0:
        out = signal.resample_poly(np.concatenate([buf, np.zeros(ctx)]), up, down)
        yield out[ctx * up // down:ctx * up // down + -(-rest * up // down)].astype(np.float32)


# -- the shared machinery --------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    method: str
    offset_seconds: float
    confidence: float
    seconds: float  # how long the method took

    def as_dict(self) -> dict[str, float]:
        return {"offset_seconds": round(self.offset_seconds, 4), "confidence": round(self.confidence, 3),
                "seconds": round(self.seconds, 3)}


def _parabolic(y: np.ndarray, i: int) -> float:
    """The fractional position of the peak at ``i`` (a parabola through it and its two neighbours)."""
    if 0 < i < len(y) - 1:
        a, b, c = float(y[i - 1]), float(y[i]), float(y[i + 1])
        denom = a - 2 * b + c
        if denom < 0:
            return i + 0.5 * (a - c) / denom
    return float(i)


def _pick(score: np.ndarray, lags: np.ndarray, step_s: float) -> tuple[float, float]:
    """(lag in steps, confidence) of the best peak of ``score`` over ``lags``.

    The rival is the best value outside the main peak's own lobe (down to where it stops falling) and
    outside +-``RIVAL_GUARD_S``: the shoulders of a broad peak are not a second candidate.
    """
    i = int(np.argmax(score))
    best = float(score[i])
    guard = max(1, round(RIVAL_GUARD_S / step_s))
    left, right = i, i
    while left > 0 and score[left - 1] <= score[left]:
        left -= 1
    while right < len(score) - 1 and score[right + 1] <= score[right]:
        right += 1
    left, right = min(left, i - guard), max(right, i + guard)
    rivals = np.concatenate([score[:max(0, left)], score[right + 1:]])
    rival = float(rivals.max()) if len(rivals) else 0.0
    confidence = 0.0 if best <= 0 else min(1.0, max(0.0, 1.0 - max(rival, 0.0) / best))
    frac = _parabolic(score, i) - i
    return float(lags[i]) + frac, confidence


def _lag_range(n_master: int, n_dub: int) -> tuple[int, int]:
    """Lags (dub delay, in steps) whose overlap is at least ``MIN_OVERLAP_FRACTION`` of the shorter sequence."""
    need = max(1, int(MIN_OVERLAP_FRACTION * min(n_master, n_dub)))
    return -(n_master - need), n_dub - need


def _xcorr_spectra(a: np.ndarray, b: np.ndarray, nfft: int) -> np.ndarray:
    """The cross-spectrum whose inverse gives sum_t b[t] * a[t - lag] at index lag (mod nfft)."""
    return sfft.rfft(b, nfft, axis=-1) * np.conj(sfft.rfft(a, nfft, axis=-1))


def _at_lags(circular: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Values of a circular correlation for lags lo..hi (lo <= 0 <= hi)."""
    return np.concatenate([circular[lo:], circular[:hi + 1]]) if lo < 0 else circular[lo:hi + 1]


def normalised_xcorr(master: np.ndarray, dub: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lags, Pearson correlation over the overlap, overlap length) of ``master`` and ``dub`` (channels x
    time, or time).

    Lag L aligns dub[t] with master[t - L] (the dub late by L steps). Sums over the overlap come from one
    FFT for the cross term and cumulative sums for the means and energies, summed over channels.
    """
    m = np.atleast_2d(master).astype(np.float64)
    d = np.atleast_2d(dub).astype(np.float64)
    nm, nd = m.shape[1], d.shape[1]
    lo, hi = _lag_range(nm, nd)
    nfft = sfft.next_fast_len(nm + nd - 1, real=True)
    cross = _at_lags(sfft.irfft(_xcorr_spectra(m, d, nfft).sum(axis=0), nfft), lo, hi)
    lags = np.arange(lo, hi + 1)
    # The overlap for lag L: dub indices [max(0, L), min(nd, nm + L)), master indices shifted by -L.
    d_start, d_end = np.maximum(0, lags), np.minimum(nd, nm + lags)
    count = (d_end - d_start).astype(np.float64)
    cm = np.concatenate([np.zeros((m.shape[0], 1)), np.cumsum(m, axis=1)], axis=1)
    cm2 = np.concatenate([np.zeros((m.shape[0], 1)), np.cumsum(m * m, axis=1)], axis=1)
    cd = np.concatenate([np.zeros((d.shape[0], 1)), np.cumsum(d, axis=1)], axis=1)
    cd2 = np.concatenate([np.zeros((d.shape[0], 1)), np.cumsum(d * d, axis=1)], axis=1)
    sm = cm[:, d_end - lags] - cm[:, d_start - lags]
    sm2 = cm2[:, d_end - lags] - cm2[:, d_start - lags]
    sd = cd[:, d_end] - cd[:, d_start]
    sd2 = cd2[:, d_end] - cd2[:, d_start]
    cov = cross - (sm * sd).sum(axis=0) / count
    var_m = (sm2 - sm * sm / count).sum(axis=0)
    var_d = (sd2 - sd * sd / count).sum(axis=0)
    return lags, cov / np.sqrt(np.maximum(var_m * var_d, 1e-20)), count


# -- the methods -----------------------------------------------------------------------------------


def by_correlation(master: np.ndarray, dub: np.ndarray, rate: int) -> tuple[float, float]:
    """GCC-PHAT on the waveforms: (offset in seconds, confidence)."""
    nm, nd = len(master), len(dub)
    nfft = sfft.next_fast_len(nm + nd - 1, real=True)
    # float32 in, complex64 spectra: half the memory of double precision, and ample for finding a peak
    cross = _xcorr_spectra(master.astype(np.float32), dub.astype(np.float32), nfft)
    mag = np.abs(cross)
    cross /= np.maximum(mag, mag.max() * 1e-9) ** PHAT_BETA
    freqs = np.arange(len(cross)) * rate / nfft
    cross[(freqs < 60) | (freqs > 0.95 * rate / 2)] = 0  # hum and the resampler's edge carry no timing
    lo, hi = _lag_range(nm, nd)
    lags = np.arange(lo, hi + 1)
    # Whitened, every overlapping sample adds about as much noise as signal: divide by the root of the
    # overlap so that short overlaps (large offsets) are judged on the same footing as long ones.
    overlap = np.minimum(nd, nm + lags) - np.maximum(0, lags)
    score = _at_lags(sfft.irfft(cross, nfft), lo, hi) / np.sqrt(overlap)
    lag, confidence = _pick(score, lags, 1 / rate)
    return -lag / rate, confidence


def frames(x: np.ndarray) -> Iterator[np.ndarray]:
    """Magnitude spectra (frames x bins) of ``x``, Hann window ``N_FFT``, hop ``HOP``, chunk by chunk."""
    window = np.hanning(N_FFT).astype(np.float32)
    padded = np.concatenate([np.zeros(N_FFT // 2, np.float32), x.astype(np.float32), np.zeros(N_FFT // 2, np.float32)])
    total = 1 + max(0, (len(padded) - N_FFT) // HOP)
    view = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    for start in range(0, total, FRAMES_PER_CHUNK):
        block = view[start:start + FRAMES_PER_CHUNK] * window
        yield np.abs(sfft.rfft(block, axis=1)).astype(np.float32)


def _mel_matrix(n_mels: int, rate: int, fmin: float = 60.0) -> np.ndarray:
    def mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(fmin), mel(rate / 2), n_mels + 2))
    bins = np.arange(N_FFT // 2 + 1) * rate / N_FFT
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    return tri.astype(np.float32)


def _rectified_rise(log_energy: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Half-wave rectified first difference along time (frames x bands), carried across chunks."""
    first = log_energy[:1] if previous is None else previous
    return np.maximum(0.0, np.diff(log_energy, axis=0, prepend=first))


def onset_envelope(x: np.ndarray, rate: int) -> np.ndarray:
    """Onset strength: rises of log energy in octave bands from 62.5 Hz, summed, minus its local mean."""
    freqs = np.arange(N_FFT // 2 + 1) * rate / N_FFT
    edges = [62.5 * 2 ** k for k in range(8) if 62.5 * 2 ** k < rate / 2] + [rate / 2 + 1]
    bands = np.stack([((freqs >= lo) & (freqs < hi)).astype(np.float32) for lo, hi in itertools.pairwise(edges)], 1)
    out, prev = [], None
    for mag in frames(x):
        log_e = np.log1p(1e3 * (mag * mag) @ bands)
        out.append(_rectified_rise(log_e, prev).sum(axis=1))
        prev = log_e[-1:]
    return _tamed(_transients(np.concatenate(out), rate))


def spectral_flux(x: np.ndarray, rate: int) -> np.ndarray:
    """Spectral flux: rectified frame-to-frame rise of every log-magnitude bin above 60 Hz, summed."""
    keep = np.arange(N_FFT // 2 + 1) * rate / N_FFT >= 60
    out, prev = [], None
    for mag in frames(x):
        log_m = np.log1p(1e2 * mag[:, keep])
        out.append(_rectified_rise(log_m, prev).sum(axis=1))
        prev = log_m[-1:]
    return _tamed(_transients(np.concatenate(out), rate))


def mfcc(x: np.ndarray, rate: int, n_mfcc: int = 13, n_mels: int = 32) -> np.ndarray:
    """MFCCs c1..c13 (coefficients x frames), each with mean 0 and variance 1 over the file."""
    mel = _mel_matrix(n_mels, rate)
    dct = sfft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[1:n_mfcc + 1]  # c0 (loudness) dropped
    out = [np.log(mag * mag @ mel.T + 1e-8) @ dct.T for mag in frames(x)]
    coeffs = np.concatenate(out).T
    coeffs -= coeffs.mean(axis=1, keepdims=True)
    coeffs /= coeffs.std(axis=1, keepdims=True) + 1e-9
    return coeffs


def _transients(env: np.ndarray, rate: int) -> np.ndarray:
    """Keep the onsets, not the slow loudness contour: subtract a 100 ms moving average, rectify again."""
    k = max(1, int(0.1 * rate / HOP))
    return np.maximum(0.0, env - np.convolve(env, np.ones(k) / k, mode="same"))


def _tamed(env: np.ndarray) -> np.ndarray:
    """An onset or flux envelope with its outliers clipped: the return from a dropout is a rise across every
    band at once, far above any real onset, and one such spike in each file would align them at a wrong lag."""
    return np.minimum(env, np.percentile(env, 99.0)) if len(env) else env


def _by_feature(feature: Callable[[np.ndarray, int], np.ndarray]) -> Callable[[np.ndarray, np.ndarray, int],
                                                                               tuple[float, float]]:
    def run(master: np.ndarray, dub: np.ndarray, rate: int) -> tuple[float, float]:
        lags, r, overlap = normalised_xcorr(feature(master, rate), feature(dub, rate))
        # A correlation over a short overlap is more easily high by chance: weigh it as evidence, by the
        # root of the overlap (as a z-score grows), so that 9 s fitting loosely do not beat 30 s fitting well.
        lag, confidence = _pick(r * np.sqrt(overlap), lags, HOP / rate)
        return -lag * HOP / rate, confidence

    return run


RUNNERS: dict[str, Callable[[np.ndarray, np.ndarray, int], tuple[float, float]]] = {
    "correlation": by_correlation,
    "onset": _by_feature(onset_envelope),
    "spectral": _by_feature(spectral_flux),
    "mfcc": _by_feature(mfcc),
}


def estimate(method: str, master: np.ndarray, dub: np.ndarray, rate: int = ANALYSIS_RATE) -> Estimate:
    t0 = time.perf_counter()
    offset, confidence = RUNNERS[method](master, dub, rate)
    return Estimate(method, offset, confidence, time.perf_counter() - t0)


def best(estimates: list[Estimate]) -> Estimate:
    """The answer: the estimate with the most confidence behind it, counting every method that agrees with it
    (within ``AGREE_S``: independent methods finding the same lag are evidence), and within that group the most
    confident estimate, the most exact one. With no agreement this is simply the most confident estimate."""

    def support(e: Estimate) -> float:
        return sum(o.confidence for o in estimates if abs(o.offset_seconds - e.offset_seconds) <= AGREE_S)

    top = max(estimates, key=lambda e: (support(e), e.confidence))
    return max((o for o in estimates if abs(o.offset_seconds - top.offset_seconds) <= AGREE_S),
               key=lambda e: e.confidence)
