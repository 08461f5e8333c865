"""Streaming video decoding with PyAV (FFmpeg): sampled, upright RGB frames with their times.

Frames are decoded one at a time and only the sampled ones are converted to arrays, so a
video is never held in memory. Times come from each frame's presentation timestamp, which
makes sampling correct for variable frame rate. Rotation metadata (the display matrix of
phone videos) is applied. A file that breaks mid-stream yields what was decoded before the
damage and reports the reader as ``partial``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from facewarden.core.errors import MediaError


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash of a (possibly large) file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class VideoInfo:
    width: int
    """Upright width (after rotation), pixels."""
    height: int
    duration_s: float | None
    """Declared duration; None when the container does not say."""
    frame_rate: float | None
    """Average frame rate the container declares."""
    codec: str
    rotation: int
    """Degrees the stored frames are turned to display them upright (0, 90, 180, 270)."""
    has_audio: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoFrame:
    index: int
    """Position among the decoded frames (0-based)."""
    time_s: float
    image: np.ndarray
    """Upright RGB, uint8."""


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored frame upright; ``rotation`` is the display matrix angle
    (counter-clockwise degrees, as FFmpeg reports it)."""
    k = (rotation // 90) % 4
    # Contiguous always: FFmpeg pads rows (a 7000-pixel-wide frame has a 7008-pixel stride),
    # and dlib's aligner refuses strided arrays.
    return np.ascontiguousarray(np.rot90(image, k) if k else image)


def _rotation_of(frame: av.VideoFrame) -> int:
    """The frame's display rotation (from its display matrix), snapped to 90 degrees."""
    try:
        angle = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    return round(angle / 90.0) * 90 % 360


def _is_iso_media(path: Path) -> bool:
    """An MP4/MOV (ISO base media) file starts with an ``ftyp`` box."""
    try:
        with path.open("rb") as fh:
            return fh.read(12)[4:8] == b"ftyp"
    except OSError:
        return False


class VideoReader:
    """One video file, opened for streaming. Use as a context manager.

    Raises :class:`MediaError` on open for files that are not videos, have no video
    stream (audio only), use a codec this build cannot decode, or exceed ``max_pixels``.
    """

    def __init__(self, path: Path, *, max_pixels: int) -> None:
        self.path = path
        self.partial: str | None = None
        """Why decoding stopped before the end, when it did."""
        self.decoded = 0
        self.last_time_s = 0.0
        try:
            self._container = av.open(str(path), mode="r")
        except FileNotFoundError as exc:
            raise MediaError("no such file", code="missing") from exc
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            if _is_iso_media(path):
                raise MediaError(
                    "MP4/MOV file without its index (moov box): truncated, or still being "
                    "written; nothing can be decoded without it",
                    code="truncated",
                ) from exc
            raise MediaError(
                f"not a video or an unsupported container: {exc}", code="not_a_video"
            ) from exc
        try:
            self.info = self._probe(max_pixels)
        except BaseException:
            self._container.close()
            raise

    def _probe(self, max_pixels: int) -> VideoInfo:
        container = self._container
        if not container.streams.video:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["nothing"]
            raise MediaError(
                f"no video stream (the file holds {', '.join(kinds)})", code="no_video"
            )
        stream = container.streams.video[0]
        ctx = stream.codec_context
        name = getattr(ctx, "name", None) or "unknown"
        if ctx is None or name in ("none", "unknown") or not ctx.width:
            raise MediaError(
                f"unsupported video codec ({getattr(stream.codec_context, 'name', None) or '?'})",
                code="unsupported_codec",
            )
        if ctx.width * ctx.height > max_pixels:
            raise MediaError(
                f"video frames too large: {ctx.width}x{ctx.height} exceeds {max_pixels} pixels",
                code="too_large",
            )
        stream.thread_type = "AUTO"
        self._stream = stream
        self._decoder = container.decode(stream)
        try:  # the first frame carries the rotation (display matrix side data)
            self._first: av.VideoFrame | None = next(self._decoder)
        except StopIteration:
            raise MediaError("the video stream holds no frame", code="corrupt") from None
        except av.error.FFmpegError as exc:
            raise MediaError(f"no frame could be decoded: {exc}", code="corrupt") from exc
        rotation = _rotation_of(self._first)
        width, height = ctx.width, ctx.height
        if rotation in (90, 270):
            width, height = height, width
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        rate = float(stream.average_rate) if stream.average_rate else None
        return VideoInfo(
            width, height, duration, rate, name, rotation, bool(container.streams.audio)
        )

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def frames(self, fps: float | None = None) -> Iterator[VideoFrame]:
        """Decoded frames in order; with ``fps``, at most that many per second of video
        (chosen by timestamp, so variable frame rate is sampled evenly)."""
        step = 1.0 / fps if fps else 0.0
        next_t: float | None = None
        rotation = self.info.rotation
        fallback_rate = self.info.frame_rate or 25.0
        try:
            for frame in itertools.chain([self._first], self._decoder):
                if frame is None:
                    continue
                self._first = None
                t = frame.time if frame.time is not None else self.decoded / fallback_rate
                index = self.decoded
                self.decoded += 1
                self.last_time_s = max(self.last_time_s, t)
                if step:
                    if next_t is not None and t < next_t - 1e-6:
                        continue
                    next_t = (next_t if next_t is not None else t) + step
                    while next_t <= t:
                        next_t += step
                yield VideoFrame(index, t, _upright(frame.to_ndarray(format="rgb24"), rotation))
        except av.error.FFmpegError as exc:
            self._damaged(f"decoding failed: {exc}")
            return
        duration = self.info.duration_s
        rate = self.info.frame_rate or 25.0
        if duration and self.last_time_s + 2.0 / rate + 0.5 < duration:
            self._damaged(
                f"the stream ends at {self.last_time_s:.2f} s of a declared {duration:.2f} s "
                "(truncated file?)"
            )

    def _damaged(self, why: str) -> None:
        if self.decoded == 0:
            raise MediaError(f"no frame could be decoded: {why}", code="corrupt")
        self.partial = f"{why}; result covers 0-{self.last_time_s:.2f} s"
