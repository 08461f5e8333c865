"""What kind of media a file name names (a pure function of its suffix)."""

from __future__ import annotations

from pathlib import Path

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp", ".wmv",
}  # fmt: skip


def is_video_path(path: str | Path) -> bool:
    """A video file by its name (the decoder still checks the content)."""
    return Path(str(path)).suffix.lower() in VIDEO_SUFFIXES
