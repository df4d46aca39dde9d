"""A stand-in for OpenFace 2.0.x's FaceLandmarkImg, FeatureExtraction and
FaceLandmarkVidMulti.

It obeys their command line and writes files with the names, headers,
separators and exit codes real OpenFace writes, so the service can be tested
without OpenFace installed. It does no vision at all: whether a file can be
opened, how many faces it shows and how many frames it has are decided by
cheap rules on the bytes (see README.md next to this file).

Standard library only; Pillow is used when it can be imported.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"

# Tests steer the stand-in with text like "openface-standin:faces=3" anywhere
# in a file's bytes (a PNG text chunk, a JPEG comment, a box in an MP4).
MARKER = re.compile(rb"openface-standin:(faces|frames|fps|seconds|crash|memory)=(\d+(?:\.\d+)?)")

# Videos whose frame count comes from their own header stop here, so tests
# stay fast; a frames= marker is never capped.
MAX_HEADER_FRAMES = 300
# What the stand-in assumes when a video says nothing (OpenFace also falls
# back to 30 fps when a video does not report its rate).
DEFAULT_FRAMES = 288
DEFAULT_FPS = 30.0
# FaceLandmarkVidMulti tracks this many faces at most (num_faces_max in its source).
MAX_TRACKED_FACES = 4

# OpenCV's imread reads these; Pillow reads more (GIF, ...) that OpenFace cannot.
IMAGE_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM"}

# Output-selection flags; giving any of them turns off everything not asked for.
SELECTION_FLAGS = ("-aus", "-pose", "-gaze", "-2Dfp", "-3Dfp", "-pdmparams", "-hogalign", "-simalign", "-tracked")


# --------------------------------------------------------------------------
# Command line


@dataclass
class Options:
    files: list[str]
    out_dir: str
    selected: set[str]  # the output-selection flags given
    record_bad_aligned: bool

    def wants(self, flag: str) -> bool:
        """Whether an output is on: all are when no selection flag was given."""
        return not self.selected or flag in self.selected


def parse_args(args: list[str]) -> Options:
    opts = Options(files=[], out_dir="processed", selected=set(), record_bad_aligned=True)
    i = 0
    while i < len(args):
        arg = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if arg == "-f" and value is not None:
            opts.files.append(value)
            i += 1
        elif arg == "-out_dir" and value is not None:
            opts.out_dir = value  # OpenFace keeps the last -out_dir
            i += 1
        elif arg in SELECTION_FLAGS:
            opts.selected.add(arg)
        elif arg == "-nobadaligned":
            opts.record_bad_aligned = False
        # Everything else (-wild, -mloc, -fx, ...) changes nothing here.
        i += 1
    return opts


# --------------------------------------------------------------------------
# Deciding what a file holds


def markers(data: bytes) -> dict[str, float]:
    return {m.group(1).decode(): float(m.group(2)) for m in MARKER.finditer(data)}


def _pillow():
    """Pillow's Image module, or None when this Python has no Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


@dataclass
class ImageInfo:
    width: int
    height: int
    faces: int
    jpeg: bytes | None  # the picture re-encoded for the annotated S.jpg
    seconds: float = 0.0  # time spent on it, after its details file is written
    crash: bool = False  # the process dies on it (SIGSEGV), after those seconds
    memory_mb: float = 0.0  # memory it takes (and gives back), after those seconds


def inspect_image(path: str) -> ImageInfo | None:
    """What FaceLandmarkImg would see in the file; None if it cannot read it."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    found = markers(data)
    Image = _pillow()
    if Image is None:
        if not _looks_like_image(data):
            return None
        # No decoder: assume OpenFace's 640x480 and one face.
        return ImageInfo(
            640,
            480,
            int(found.get("faces", 1)),
            None,
            found.get("seconds", 0.0),
            bool(found.get("crash")),
            found.get("memory", 0.0),
        )
    try:
        picture = Image.open(io.BytesIO(data))
        if picture.format not in IMAGE_FORMATS:
            return None
        picture = picture.convert("RGB")  # decodes every pixel
    except Exception:  # Pillow raises many kinds of errors on bad data
        return None
    flat = all(low == high for low, high in picture.getextrema())
    faces = int(found.get("faces", 0 if flat else 1))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG")
    return ImageInfo(
        picture.width,
        picture.height,
        faces,
        buffer.getvalue(),
        found.get("seconds", 0.0),
        bool(found.get("crash")),
        found.get("memory", 0.0),
    )


def _looks_like_image(data: bytes) -> bool:
    return data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")) or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    )


@dataclass
class VideoInfo:
    frames: int
    fps: float
    faces: int  # 0: no face in any frame; FeatureExtraction tracks one face at most
    seconds: float = 0.0  # time spread over its frames, after its details file is written
    crash: bool = False  # the process dies on it (SIGSEGV), before its first frame
    memory_mb: float = 0.0  # memory it takes (and gives back) before its first frame


def inspect_video(path: str) -> VideoInfo | None:
    """What FeatureExtraction would see in the file; None if it cannot open it."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    container = _container_info(data)
    if container is None:
        return None
    frames, fps = container
    found = markers(data)
    return VideoInfo(
        frames=int(found.get("frames", frames)),
        fps=found.get("fps", fps) or DEFAULT_FPS,
        faces=int(found.get("faces", 1)),
        seconds=found.get("seconds", 0.0),
        crash=bool(found.get("crash")),
        memory_mb=found.get("memory", 0.0),
    )


ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
ASF_DATA = bytes.fromhex("3626b2758e66cf11a6d900aa0062ce6c")


def _container_info(data: bytes) -> tuple[int, float] | None:
    """(frames, fps) if the bytes are a video container that holds together."""
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return _avi_info(data)
    if data[:16] == ASF_HEADER:  # WMV / ASF: header object, then data object
        header_size = struct.unpack_from("<Q", data, 16)[0] if len(data) >= 24 else 0
        if data[header_size : header_size + 16] == ASF_DATA:
            return DEFAULT_FRAMES, DEFAULT_FPS
        return None
    if data.startswith((b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"FLV\x01")):
        return DEFAULT_FRAMES, DEFAULT_FPS  # Matroska/WebM, MPEG-PS, FLV: magic only
    if any(kind == b"moov" for kind, _, _ in iso_boxes(data)):  # MP4 / MOV
        return DEFAULT_FRAMES, DEFAULT_FPS
    return None


def iso_boxes(data: bytes):
    """Yield (type, payload start, box end) of top-level ISO-BMFF boxes, stopping at junk."""
    end = len(data)
    pos = 0
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # 64-bit size follows the type
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:  # box runs to the end of the file
            size = end - pos
        if size < header or pos + size > end or not re.fullmatch(rb"[ -~]{4}", kind):
            return
        yield kind, pos + header, pos + size
        pos += size


def _riff_chunks(data: bytes, start: int, end: int):
    """Yield (id, list type or None, payload start, payload end) of RIFF chunks."""
    pos = start
    while pos + 8 <= end:
        kind, size = struct.unpack_from("<4sI", data, pos)
        payload = pos + 8
        if payload + size > end:
            return
        list_type = data[payload : payload + 4] if kind == b"LIST" else None
        yield kind, list_type, payload, payload + size
        pos = payload + size + (size & 1)  # chunks are padded to even sizes


def _avi_info(data: bytes) -> tuple[int, float] | None:
    """An AVI needs a header list with its main header, and a 'movi' list."""
    riff_end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    main_header = None
    has_movi = False
    for _kind, list_type, start, end in _riff_chunks(data, 12, riff_end):
        if list_type == b"hdrl":
            for sub, _, sub_start, sub_end in _riff_chunks(data, start + 4, end):
                if sub == b"avih" and sub_end - sub_start >= 20:
                    main_header = data[sub_start:sub_end]
        elif list_type == b"movi":
            has_movi = True
    if main_header is None or not has_movi:
        return None
    usec_per_frame = struct.unpack_from("<I", main_header, 0)[0]
    total_frames = struct.unpack_from("<I", main_header, 16)[0]
    fps = 1e6 / usec_per_frame if usec_per_frame else DEFAULT_FPS
    return min(total_frames, MAX_HEADER_FRAMES), fps


# --------------------------------------------------------------------------
# CSV rows, from one real OpenFace row per kind (templates/)


def _template(kind: str) -> tuple[list[str], list[str]]:
    header = (TEMPLATES / f"{kind}_header.txt").read_text().rstrip("\n").split(", ")
    row = (TEMPLATES / f"{kind}_row.txt").read_text().rstrip("\n").split(", ")
    return header, row


def column_group(name: str) -> str | None:
    """The selection flag that turns a column on; None for the leading columns."""
    if name.startswith(("gaze_", "eye_lmk_")):
        return "-gaze"
    if name.startswith("pose_"):
        return "-pose"
    if re.fullmatch(r"[xy]_\d+", name):
        return "-2Dfp"
    if re.fullmatch(r"[XYZ]_\d+", name):
        return "-3Dfp"
    if name.startswith("p_"):
        return "-pdmparams"
    if name.startswith("AU"):
        return "-aus"
    return None


def _zero(value: str) -> str:
    """A 0 written with as many decimals as value ("-0.962385" -> "0.000000")."""
    return re.sub(r"[1-9]", "0", value).lstrip("-")


class CsvTable:
    """Header and rows for one CSV kind, limited to the selected column groups."""

    def __init__(self, kind: str, opts: Options):
        header, self.template = _template(kind)
        self.keep = [i for i, name in enumerate(header) if column_group(name) is None or opts.wants(column_group(name))]
        self.header = ", ".join(header[i] for i in self.keep)

    def line(self, leading: list[str], zeroed: bool = False) -> str:
        rest = self.template[len(leading) :]
        values = leading + ([_zero(v) for v in rest] if zeroed else rest)
        return ", ".join(values[i] for i in self.keep)

    def image_row(self, face: int) -> str:
        return self.line([str(face)])

    def video_row(self, frame: int, fps: float, success: bool, face: int = 0) -> str:
        # A frame without a face: every value after the timestamp is 0
        # (confidence and success included), written with the same decimals.
        return self.line([str(frame), str(face), f"{(frame - 1) / fps:.3f}"], zeroed=not success)


# --------------------------------------------------------------------------
# Writing one input's files, in the order OpenFace's recorder does


def _number(value: float) -> str:
    """A float the way C++ streams print it by default (6 significant digits)."""
    return f"{value:g}"


def camera_for_image(width: int, height: int) -> str:
    # OpenFace's guess when no -fx/-fy/-cx/-cy is given.
    focal = (500 * width / 640 + 500 * height / 480) / 2
    return ",".join(_number(v) for v in (focal, focal, width / 2, height / 2))


VIDEO_CAMERA = "500,500,320,240"  # the stand-in cannot see a video's frame size


def _bmp(width: int = 8, height: int = 8) -> bytes:
    """A small grey 24-bit BMP, standing in for an aligned face."""
    row = b"\x80" * (width * 3) + b"\x00" * (-width * 3 % 4)
    pixels = row * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    return header + info + pixels


def _hog_record(success: bool) -> bytes:
    """One HOG observation: columns, rows, channels, validity, then the features."""
    return struct.pack("<3if", 1, 1, 31, 1.0 if success else 0.0) + bytes(4 * 31)


def _avi(frames: int, fps: float) -> bytes:
    """A small AVI (main header and an empty 'movi' list) as the tracked video."""
    avih = struct.pack("<14I", int(1e6 / fps), 0, 0, 0, frames, 0, 1, 0, 640, 480, 0, 0, 0, 0)
    hdrl = b"hdrl" + b"avih" + struct.pack("<I", len(avih)) + avih
    body = b"AVI " + b"LIST" + struct.pack("<I", len(hdrl)) + hdrl + b"LIST" + struct.pack("<I", 4) + b"movi"
    return b"RIFF" + struct.pack("<I", len(body)) + body


class Recorder:
    """The files for one input, like OpenFace's RecorderOpenFace."""

    def __init__(self, input_path: str, opts: Options, camera: str, sequence: bool):
        self.opts = opts
        self.sequence = sequence
        self.root = Path(opts.out_dir)
        self.name = Path(input_path).stem
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError:
            print(
                f"ERROR: failed to create output directory:{opts.out_dir}, do you have permission to create directory",
                flush=True,
            )
            sys.exit(1)
        full_path = input_path if os.path.isabs(input_path) else os.path.realpath(input_path)
        lines = [f"Input:{input_path}", f"Input full path:{full_path}", f"Camera parameters:{camera}"]
        self.hog = None
        if opts.wants("-hogalign"):
            lines.append(f"Output HOG:{self.name}.hog")
            self.hog = (self.root / f"{self.name}.hog").open("wb")
        if opts.wants("-tracked"):
            tracked = f"{self.name}.avi" if sequence else f"{self.name}.jpg"
            lines.append(("Output video:" if sequence else "Output image:") + tracked)
        self.aligned = None
        if opts.wants("-simalign"):
            lines.append(f"Output aligned directory:{self.name}_aligned")
            self.aligned = self.root / f"{self.name}_aligned"
            self.aligned.mkdir(exist_ok=True)
        self.details = (self.root / f"{self.name}_of_details.txt").open("w")
        self.details.write("".join(line + "\n" for line in lines))
        self.details.flush()
        self.csv = None

    def observe(self, table: CsvTable, row: str, success: bool, aligned_name: str) -> None:
        """One face in one image or frame: a CSV row, a HOG record, an aligned face."""
        if self.csv is None:  # OpenFace opens the CSV at the first observation
            self.details.write(
                f"Output csv:{self.name}.csv\n"
                f"Gaze: {int(self.opts.wants('-gaze'))}\n"
                f"AUs: {int(self.opts.wants('-aus'))}\n"
                f"Landmarks 2D: {int(self.opts.wants('-2Dfp'))}\n"
                f"Landmarks 3D: {int(self.opts.wants('-3Dfp'))}\n"
                f"Pose: {int(self.opts.wants('-pose'))}\n"
                f"Shape parameters: {int(self.opts.wants('-pdmparams'))}\n"
            )
            self.details.flush()
            self.csv = (self.root / f"{self.name}.csv").open("w")
            self.csv.write(table.header + "\n")
        self.csv.write(row + "\n")
        if self.hog is not None:
            self.hog.write(_hog_record(success))
        if self.aligned is not None and (success or self.opts.record_bad_aligned):
            (self.aligned / f"{aligned_name}.bmp").write_bytes(_bmp())

    def write_tracked(self, content: bytes) -> None:
        if self.opts.wants("-tracked"):
            suffix = ".avi" if self.sequence else ".jpg"
            (self.root / f"{self.name}{suffix}").write_bytes(content)

    def close(self) -> None:
        for handle in (self.csv, self.hog, self.details):
            if handle is not None:
                handle.close()


# --------------------------------------------------------------------------
# Console output (a few representative lines of the real one)


def _say(line: str = "", end: str = "\n") -> None:
    sys.stdout.write(line + end)
    sys.stdout.flush()


def _print_landmark_model() -> None:
    model = HERE / "model"
    for line in (
        f"Reading the landmark detector/tracker from: {model}/main_ceclm_general.txt",
        f"Reading the landmark detector module from: {model}/clnf_general.txt",
        f"Reading the PDM module from: {model}/pdms/In-the-wild_aligned_PDM_68.txt....Done",
        "Reading part based module....left_eye_28",
        "Done",
        "Reading the landmark validation module....Done",
    ):
        _say(line)


def _print_au_model(svms: str, predictors: str) -> None:
    _say(f"Reading the AU analysis module from: {HERE}/AU_predictors/{svms}")
    _say(f"Reading the AU predictors from: {HERE}/AU_predictors/{predictors}... Done")


def _print_mtcnn_loading() -> None:
    _say(f"Reading the MTCNN face detector from: {HERE}/model/mtcnn_detector/MTCNN_detector.txt")


# The stand-in engine's way to hear a video's progress (openface-engine).
on_progress = None


# --------------------------------------------------------------------------
# Test knobs (environment variables)


def _log_invocation(exe: str, args: list[str]) -> None:
    log_path = os.environ.get("OPENFACE_STANDIN_LOG")
    if log_path:
        entry = {"exe": exe, "args": args, "cwd": os.getcwd(), "pid": os.getpid()}
        with open(log_path, "a") as log:  # one write per line, so runs do not interleave
            log.write(json.dumps(entry) + "\n")


def _knob(name: str, convert):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return convert(raw)
    except ValueError:
        print(f"openface-standin: {name}={raw!r} is not a number", file=sys.stderr)
        sys.exit(2)


def _nap(seconds: float | None) -> None:
    """Sleep in short naps, so SIGTERM and SIGKILL act at once."""
    _nap_until(time.monotonic() + (seconds or 0.0))


def _nap_until(deadline: float) -> None:
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _sleep_and_maybe_fail() -> None:
    """OPENFACE_STANDIN_SLEEP, then OPENFACE_STANDIN_EXIT, after the models 'load'."""
    _nap(_knob("OPENFACE_STANDIN_SLEEP", float))
    code = _knob("OPENFACE_STANDIN_EXIT", int)
    if code is not None:
        print(f"openface-standin: simulated failure (OPENFACE_STANDIN_EXIT={code})", file=sys.stderr, flush=True)
        if code < 0:  # a negative code means "killed by that signal", as subprocess reports it
            _die_by_signal(-code)
        sys.exit(code)


class BadAlloc(Exception):
    """What OpenFace's C++ throws when an allocation fails, as under a memory cap (std::bad_alloc)."""


def _take_memory(megabytes: float) -> None:
    """Allocate (and touch) that much memory, then give it back; BadAlloc if the process may not."""
    if not megabytes:
        return
    try:
        block = bytearray(int(megabytes * 1024 * 1024))
    except MemoryError:
        raise BadAlloc("std::bad_alloc") from None
    del block


def _die_by_signal(signum: int) -> None:
    try:
        import resource  # no core file from SIGABRT/SIGSEGV in the tests' folders

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(1)
    sys.exit(128 + signum)  # only if the signal did not end the process


# --------------------------------------------------------------------------
# FaceLandmarkImg


def face_landmark_img(opts: Options) -> int:
    images = opts.files
    if not images:
        _say("Could not open any images")
        return 1
    _say("Loading the model")
    _print_landmark_model()
    _say("Model loaded")
    _print_au_model("main_static_svms.txt", "AU_all_static.txt")
    _print_mtcnn_loading()
    _sleep_and_maybe_fail()
    table = CsvTable("image", opts)
    # OpenFace reads the first image before "Starting tracking" and every
    # later one at the end of the loop; any image it cannot read ends the
    # program with exit code 1, keeping what earlier images wrote.
    for index, path in enumerate(images):
        info = inspect_image(path)
        if info is None:
            _say(f"Error: Could not open the image: {path}")
            return 1
        if index == 0:
            _say("Starting tracking")
        recorder = Recorder(path, opts, camera_for_image(info.width, info.height), sequence=False)
        _nap(info.seconds)
        if info.crash:
            _die_by_signal(signal.SIGSEGV)
        _take_memory(info.memory_mb)
        for face in range(info.faces):
            recorder.observe(table, table.image_row(face), True, f"face_det_{face:06d}")
        recorder.write_tracked(info.jpeg if info.jpeg is not None else Path(path).read_bytes())
        recorder.close()
    return 0


# --------------------------------------------------------------------------
# FeatureExtraction and FaceLandmarkVidMulti (one loop, as their sources share it)


def feature_extraction(opts: Options) -> int:
    _print_landmark_model()
    _print_au_model("main_dynamic_svms.txt", "AU_all_best.txt")
    _sleep_and_maybe_fail()
    return _track_videos(opts, multi=False)


def face_landmark_vid_multi(opts: Options) -> int:
    _print_landmark_model()
    _print_mtcnn_loading()  # loaded up front here, not at the first detection
    _print_au_model("main_static_svms.txt", "AU_all_static.txt")
    _sleep_and_maybe_fail()
    return _track_videos(opts, multi=True)


def _faces_per_frame(info: VideoInfo, multi: bool) -> list[tuple[int, bool]]:
    """(face_id, success) of the rows written for each frame."""
    if multi:
        # Only faces being tracked get rows: a video without faces gets no
        # rows and so no CSV (checked against the real executable).
        return [(face, True) for face in range(min(info.faces, MAX_TRACKED_FACES))]
    return [(0, info.faces > 0)]  # FeatureExtraction: a row per frame, face or not


def _track_videos(opts: Options, multi: bool) -> int:
    table = CsvTable("video", opts)
    mtcnn_loaded = multi  # FaceLandmarkVidMulti loaded it with the models
    for path in opts.files:
        _say(f"Attempting to read from file: {path}")
        info = inspect_video(path)
        if info is None:
            # OpenFace 2.0.x leaves its loop here: later videos are not read.
            _say(f"Failed to open the video file at location: {path}")
            break
        _say("Device or file opened")
        # The details file comes first: the service reads it to know which input is in hand.
        recorder = Recorder(path, opts, VIDEO_CAMERA, sequence=True)
        started = time.monotonic()
        if multi and opts.wants("-aus"):
            _say("WARNING: using a AU detection in multiple face mode, it might not be as accurate and is experimental")
        _say("Starting tracking")
        if not mtcnn_loaded:  # loaded at the first detection, once per run
            _print_mtcnn_loading()
            mtcnn_loaded = True
        if info.crash:
            _die_by_signal(signal.SIGSEGV)
        _take_memory(info.memory_mb)
        faces = _faces_per_frame(info, multi)
        reported = 0
        for frame in range(1, info.frames + 1):
            # Each frame takes its share of seconds=; deadlines from the start keep the total exact.
            _nap_until(started + info.seconds * frame / info.frames)
            for face, success in faces:
                recorder.observe(
                    table, table.video_row(frame, info.fps, success, face), success, f"frame_det_{face:02d}_{frame:06d}"
                )
            # OpenFace's progress line: at most one step per frame.
            if frame / info.frames >= reported / 10:
                _say(f"{reported * 10}% ", end="\n" if reported == 10 else "")
                if on_progress is not None:
                    on_progress(reported * 10)
                reported += 1
        _nap_until(started + info.seconds)  # a video with no frames still takes its time
        if info.frames:
            recorder.write_tracked(_avi(info.frames, info.fps))
        _say("Closing output recorder")
        recorder.close()
        _say("Closing input reader")
        _say("Closed successfully")
        if opts.wants("-aus") and not multi:  # FaceLandmarkVidMulti has no postprocessing
            _say("Postprocessing the Action Unit predictions")
    return 0


# --------------------------------------------------------------------------


def main(exe: str, args: list[str]) -> int:
    # Like a C++ program, die quietly when the reader of stdout goes away.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _log_invocation(exe, args)
    if not args:
        _say("For command line arguments see:")
        _say(" https://github.com/TadasBaltrusaitis/OpenFace/wiki/Command-line-arguments", end="")
        return 0
    opts = parse_args(args)
    try:
        return _run(exe, opts)
    except BadAlloc:  # uncaught in OpenFace's executables: the C++ runtime aborts
        sys.stdout.flush()
        print(
            "terminate called after throwing an instance of 'std::bad_alloc'\n  what():  std::bad_alloc",
            file=sys.stderr,
            flush=True,
        )
        _die_by_signal(signal.SIGABRT)
        return 134


def _run(exe: str, opts) -> int:
    if exe == "FaceLandmarkImg":
        return face_landmark_img(opts)
    if exe == "FeatureExtraction":
        return feature_extraction(opts)
    if exe == "FaceLandmarkVidMulti":
        return face_landmark_vid_multi(opts)
    raise ValueError(f"unknown OpenFace executable: {exe}")
