"""Making test media that the OpenFace stand-in judges as the test wants.

    from openface_standin.media import BIN_DIR, make_face_image, make_video, standin_env

The stand-in reads "openface-standin:<key>=<number>" markers from the bytes
(see README.md); these helpers write them in places real decoders ignore.
Pillow is needed for the image helpers only.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path

# The folder with the stand-in FaceLandmarkImg, FeatureExtraction and FaceLandmarkVidMulti.
BIN_DIR = Path(__file__).resolve().parent


def standin_env(base: dict[str, str] | None = None, **knobs: str) -> dict[str, str]:
    """An environment for running the stand-in: the running Python (which has
    Pillow) first on PATH, as the executables start with `#!/usr/bin/env python3`;
    knobs such as OPENFACE_STANDIN_SLEEP="2" are added as given."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({key: str(value) for key, value in knobs.items()})
    return env


def _marker(**values: float) -> str:
    return " ".join(f"openface-standin:{key}={value:g}" for key, value in values.items())


def _crash(crash: bool) -> dict[str, float]:
    """The marker that makes the stand-in die on the file (SIGSEGV), as OpenFace on a poison file."""
    return {"crash": 1} if crash else {}


def _format(path: Path, fmt: str | None) -> str:
    fmt = (fmt or ("PNG" if path.suffix.lower() == ".png" else "JPEG")).upper()
    if fmt not in ("JPEG", "PNG"):
        raise ValueError(f"only JPEG and PNG can carry a marker, not {fmt}")
    return fmt


def _save(picture, path: Path, fmt: str, text: str | None) -> Path:
    if text is None:
        picture.save(path, fmt)
    elif fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Comment", text)  # a tEXt chunk
        picture.save(path, fmt, pnginfo=info)
    else:
        picture.save(path, fmt, comment=text)  # a JPEG COM segment
    return path


def make_face_image(
    path,
    faces: int = 1,
    fmt: str | None = None,
    size: tuple[int, int] = (160, 120),
    seconds: float = 0,
    crash: bool = False,
    memory_mb: float = 0,
) -> Path:
    """A drawn picture the stand-in finds `faces` faces in (0 is allowed), spends `seconds` on,
    and takes `memory_mb` of memory for. fmt is "JPEG" or "PNG"; by default it follows the file's extension."""
    from PIL import Image, ImageDraw

    path = Path(path)
    width, height = size
    picture = Image.new("RGB", size, (90, 140, 200))
    draw = ImageDraw.Draw(picture)
    # A cartoon face, so a person looking at a test file sees what it is meant to be.
    draw.ellipse((width * 0.3, height * 0.15, width * 0.7, height * 0.85), fill=(235, 190, 150))
    for eye_x in (0.42, 0.58):
        draw.ellipse((width * (eye_x - 0.03), height * 0.38, width * (eye_x + 0.03), height * 0.46), fill=(40, 40, 40))
    draw.arc((width * 0.4, height * 0.5, width * 0.6, height * 0.72), 20, 160, fill=(150, 40, 40), width=2)
    memory = {"memory": memory_mb} if memory_mb else {}
    return _save(picture, path, _format(path, fmt), _marker(faces=faces, seconds=seconds, **_crash(crash), **memory))


def make_png_header(path, width: int, height: int) -> Path:
    """A few hundred bytes of PNG whose header declares ``width``×``height`` pixels: what a decoder
    would allocate for, though the data that follows is a stub."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path = Path(path)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(256))) + chunk(b"IEND", b"")
    )
    return path


def make_flat_image(
    path, color: tuple[int, int, int] = (128, 128, 128), size: tuple[int, int] = (320, 240), fmt: str | None = None
) -> Path:
    """A single-colour picture: the stand-in finds no face in it (no marker needed)."""
    from PIL import Image

    path = Path(path)
    return _save(Image.new("RGB", size, color), path, _format(path, fmt), None)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def make_video(
    path, frames: int = 30, faces: int = 1, fps: float = 30, seconds: float = 0, crash: bool = False
) -> Path:
    """A minimal MP4 (ftyp, moov with a movie header, free, mdat) that the stand-in
    opens; it reports `frames` frames at `fps`, with `faces` faces in every frame
    (FeatureExtraction tracks one of them; none when faces=0), and spends `seconds`
    on it, spread over its frames. No real player can show it: there are no tracks."""
    path = Path(path)
    timescale = 1000
    mvhd = struct.pack(
        ">B3xIIII I H10x 9I 24x I",
        0,
        0,
        0,
        timescale,
        round(frames / fps * timescale),
        0x00010000,
        0x0100,  # rate 1.0, volume 1.0
        0x00010000,
        0,
        0,
        0,
        0x00010000,
        0,
        0,
        0,
        0x40000000,  # identity matrix
        1,  # next track id
    )
    data = (
        _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isommp41")
        + _box(b"moov", _box(b"mvhd", mvhd))
        + _box(b"free", _marker(frames=frames, faces=faces, fps=fps, seconds=seconds, **_crash(crash)).encode())
        + _box(b"mdat", bytes(256))
    )
    path.write_bytes(data)
    return path


def make_corrupt_video(path) -> Path:
    """An MP4 file type box followed by junk, like ../shared/media/corrupt.mp4:
    it looks like an MP4 to a sniffer, but nothing can open it."""
    path = Path(path)
    ftyp = _box(b"ftyp", b"mp42" + struct.pack(">I", 0) + b"mp42isom")
    path.write_bytes(ftyp + bytes(range(256)) * 40)
    return path


def make_mjpeg_avi(path, frames: list, fps: int = 30) -> Path:
    """A real video OpenCV decodes (Motion JPEG in AVI) from Pillow pictures, for real OpenFace."""
    path = Path(path)
    jpegs = []
    for frame in frames:
        buffer = io.BytesIO()
        frame.convert("RGB").save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    width, height = frames[0].size
    largest = max(map(len, jpegs))
    main_header = struct.pack("<10I16x", 1_000_000 // fps, 0, 0, 0x10, len(jpegs), 0, 1, largest, width, height)
    stream_header = b"vidsMJPG" + struct.pack(
        "<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 1, fps, 0, len(jpegs), largest, 0xFFFFFFFF, 0, 0, 0, width, height
    )
    stream_format = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
    header = _list(
        b"hdrl",
        _chunk(b"avih", main_header) + _list(b"strl", _chunk(b"strh", stream_header) + _chunk(b"strf", stream_format)),
    )
    movie, index, offset = b"", b"", 4
    for data in jpegs:
        movie += _chunk(b"00dc", data)
        index += b"00dc" + struct.pack("<III", 0x10, offset, len(data))
        offset = 4 + len(movie)
    body = b"AVI " + header + _list(b"movi", movie) + _chunk(b"idx1", index)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _list(kind: bytes, payload: bytes) -> bytes:
    return b"LIST" + struct.pack("<I", len(payload) + 4) + kind + payload
