"""One PNG per analysed video, drawn from OpenFace's CSV for a paper's supplement.

Four panels share a time axis: AU intensities as a heatmap, head rotation,
gaze angles, and tracking confidence with success rate.

The CSV is streamed once and downsampled into at most ``2 * max_points`` bins
per face, so an hour of video (100k+ frames) costs no more memory than a
minute. Matplotlib is used only through ``Figure`` and the Agg canvas: no
pyplot, no rcParams, nothing global, so worker threads can draw at once.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from analysis.openface.summary import InvalidCsv, iter_rows, read_header, tracked

# FACS names of the AUs OpenFace estimates.
AU_NAMES = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    17: "chin raiser",
    20: "lip stretcher",
    23: "lip tightener",
    25: "lips part",
    26: "jaw drop",
    28: "lip suck",
    45: "blink",
}
POSE = (("pose_Rx", "pitch (Rx)"), ("pose_Ry", "yaw (Ry)"), ("pose_Rz", "roll (Rz)"))
GAZE = (("gaze_angle_x", "horizontal (x)"), ("gaze_angle_y", "vertical (y)"))
# Okabe-Ito colours: distinguishable with colour-blindness and in greyscale print.
COLOURS = ("#0072B2", "#D55E00", "#009E73")
MAX_FACES = 16  # faces given bins; later face_ids are only counted
MAX_COUNTED_FACES = 10_000  # bounds the set of face_ids merely counted
GAP_FRAMES = 5  # a time jump over this many frame intervals is drawn as a gap
AU_COLUMN = re.compile(r"AU(\d+)_r")
REQUIRED = ("timestamp", "confidence", "success")

# Bin layout: fixed fields, then per-value sums over successful frames.
T_START, T_END, ROWS, OK, CONFIDENCE, VALUES = range(6)


class _Bins:
    """One face's time series as sums per bin of ``width`` consecutive rows.

    When all ``capacity`` bins are used, neighbouring pairs are merged and the
    width doubles, so memory is fixed however many rows arrive. Sums rather
    than means make merging exact.
    """

    def __init__(self, n_values: int, capacity: int) -> None:
        self.data = np.zeros((capacity, VALUES + n_values))
        self.count = 0
        self.width = 1
        self.rows = 0
        self.ok = 0
        self._open = self._empty()  # a plain list: per-row numpy updates are ~10x slower

    def _empty(self) -> list[float]:
        return [math.inf, -math.inf, 0, 0, 0.0] + [0.0] * (self.data.shape[1] - VALUES)

    def add(self, time: float, confidence: float, ok: bool, values: list[float]) -> None:
        b = self._open
        b[T_START] = min(b[T_START], time)
        b[T_END] = max(b[T_END], time)
        b[ROWS] += 1
        b[CONFIDENCE] += confidence
        self.rows += 1
        # A failed frame's AUs, pose and gaze are zeros, not measurements.
        if ok:
            b[OK] += 1
            self.ok += 1
            for i, value in enumerate(values, VALUES):
                b[i] += value
        if b[ROWS] == self.width:
            self._flush()

    def _flush(self) -> None:
        self.data[self.count] = self._open
        self.count += 1
        self._open = self._empty()
        if self.count == len(self.data):
            # Merged as soon as full, so every stored bin holds exactly ``width`` rows.
            first, second = self.data[0::2], self.data[1::2]
            merged = first + second
            merged[:, T_START] = np.minimum(first[:, T_START], second[:, T_START])
            merged[:, T_END] = np.maximum(first[:, T_END], second[:, T_END])
            self.count //= 2
            self.data[: self.count] = merged
            self.width *= 2

    def finish(self) -> np.ndarray:
        if self._open[ROWS]:
            self._flush()
        return self.data[: self.count]


class _Series:
    """The chosen face's bins as arrays ready to draw, gaps included."""

    def __init__(self, bins: np.ndarray, width: int, value_columns: list[str]) -> None:
        start, end, rows, ok = bins[:, T_START], bins[:, T_END], bins[:, ROWS], bins[:, OK]
        self.width = width
        self.rows = int(rows.sum())
        self.ok = int(ok.sum())
        self.start, self.end = float(start[0]), float(end[-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            means = bins[:, VALUES:] / ok[:, None]  # 0/0 = NaN: a bin without a face is a gap
        means[ok == 0] = np.nan

        # One frame interval: the step between consecutive bins is one frame.
        steps = start[1:] - end[:-1]
        within = ((end - start) / np.maximum(rows - 1, 1))[rows > 1]
        positive = np.concatenate([steps[steps > 0], within[within > 0]])
        self.frame_step = float(np.median(positive)) if positive.size else 1.0
        gap_after = steps > GAP_FRAMES * self.frame_step

        # Cells in time order; index -1 is an empty cell covering a gap.
        half = self.frame_step / 2
        cells, edges = [], [start[0] - half]
        for i in range(len(bins)):
            last = i == len(bins) - 1
            if last or gap_after[i]:
                edges.append(end[i] + half)
            else:
                edges.append((end[i] + start[i + 1]) / 2)
            cells.append(i)
            if not last and gap_after[i]:
                edges.append(start[i + 1] - half)
                cells.append(-1)
        index = np.array(cells)
        empty = index < 0
        self.edges = np.array(edges)
        self.centres = (self.edges[:-1] + self.edges[1:]) / 2

        def expand(values: np.ndarray) -> np.ndarray:
            out = values[index].astype(float)
            out[empty] = np.nan
            return out

        self.confidence = expand(bins[:, CONFIDENCE] / rows)
        self.success = expand(ok / rows)
        self.values = {name: expand(means[:, i]) for i, name in enumerate(value_columns)}


def _read(csv: Path, max_points: int):
    """Stream the CSV into bins per face; returns the face with most successful frames."""
    header = read_header(csv)
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise InvalidCsv(f"{csv.name} is not an OpenFace video CSV: no {', '.join(missing)} column")
    aus = [name for name in header if AU_COLUMN.fullmatch(name)]
    angles = [name for name, _ in (*POSE, *GAZE) if name in header]
    values = aus + angles
    has_face_id = "face_id" in header
    columns = [*REQUIRED, *values] + (["face_id"] if has_face_id else [])

    faces: dict[float, _Bins] = {}
    untracked: set[float] = set()
    for row in iter_rows(csv, columns):
        face = row["face_id"] if has_face_id else 0.0
        bins = faces.get(face)
        if bins is None:
            if len(faces) >= MAX_FACES:
                if len(untracked) < MAX_COUNTED_FACES:
                    untracked.add(face)
                continue
            bins = faces[face] = _Bins(len(values), 2 * max_points)
        bins.add(row["timestamp"], row["confidence"], tracked(row), [row[name] for name in values])
    if not faces:
        raise InvalidCsv(f"{csv.name} has a header but no frames")

    face, bins = max(faces.items(), key=lambda item: (item[1].ok, item[1].rows, -item[0]))
    face_count = len(faces) + len(untracked)
    series = _Series(bins.finish(), bins.width, values)
    return series, aus, angles, (face, face_count) if face_count > 1 else None


def draw_video(csv: Path, png: Path, title: str, max_points: int = 2000) -> None:
    """Draw ``csv`` (OpenFace video output) to ``png``; raises on any failure."""
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    csv, png = Path(csv), Path(png)
    series, aus, angles, face = _read(csv, max_points)
    figure, heading = _figure(series, aus, angles, face, title)

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    # Written beside the target and renamed, so a reader never sees half a PNG.
    handle, temporary = tempfile.mkstemp(prefix=f".{png.name}.", dir=png.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            figure.savefig(out, format="png", dpi=150, metadata={"Title": heading})
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would stay on the PNG
        os.replace(temporary, png)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _figure(series: _Series, aus: list[str], angles: list[str], face, title: str):
    # Imported here so the web process, which never plots, does not pay for it.
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    tracked = series.ok > 0
    span = series.end - series.start
    # Like the summary's duration_seconds: the last frame lasts one frame interval too.
    length = span * series.rows / (series.rows - 1) if series.rows > 1 else span
    info = [f"{series.rows:,} frame{'s' if series.rows != 1 else ''}", _duration(length)]
    info.append(f"face found in {series.ok / series.rows:.0%} of frames")
    if face is not None:
        info.insert(0, f"face_id {face[0]:g}, the longest tracked of {face[1]} faces")
    if series.width > 1:
        info.append(f"each point is the mean of {series.width} frames")
    heading = f"{title} \u2014 {', '.join(info)}"

    figure = Figure(figsize=(10, 9), layout="constrained")
    figure.get_layout_engine().set(h_pad=0.06, hspace=0.02)
    wrapped = "\n".join(textwrap.wrap(title, 90, break_long_words=True, break_on_hyphens=False))
    figure.suptitle(f"{wrapped}\n{', '.join(info)}", fontsize=11)
    au_ax, pose_ax, gaze_ax, quality_ax = figure.subplots(
        4, 1, sharex=True, gridspec_kw={"height_ratios": [2.4 if aus else 0.6, 1, 1, 1]}
    )
    for ax in (au_ax, pose_ax, gaze_ax, quality_ax):
        ax.tick_params(labelsize=8)
    x_range = (series.edges[0], series.edges[-1])

    # AU heatmap: one row per AU, empty cells (no face) left white.
    if aus:
        grid = np.array([series.values[name] for name in aus])
        cmap = colormaps["viridis"].with_extremes(bad="white")
        mesh = au_ax.pcolormesh(
            series.edges, np.arange(len(aus) + 1), np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=5
        )
        au_ax.set_yticks(np.arange(len(aus)) + 0.5, [_au_label(name) for name in aus], fontsize=7.5)
        au_ax.set_ylim(len(aus), 0)  # AU01 at the top, as in FACS tables
        au_ax.tick_params(axis="y", length=0)
        # An inset beside the heatmap, not space taken from it: the x axes stay aligned.
        bar = figure.colorbar(mesh, cax=au_ax.inset_axes([1.01, 0, 0.015, 1]))
        bar.set_label("intensity (0\u20135)", fontsize=9)
        bar.ax.tick_params(labelsize=8)
    else:
        au_ax.set_yticks([])
        _note(au_ax, "no AU intensity columns (AUxx_r) in the CSV")

    for ax, names, label, missing in (
        (pose_ax, POSE, "head rotation\n(degrees, from rad)", "no pose_Rx/Ry/Rz columns in the CSV"),
        (gaze_ax, GAZE, "gaze angle\n(degrees, from rad)", "no gaze_angle_x/y columns in the CSV"),
    ):
        present = [(name, legend) for name, legend in names if name in angles]
        for (name, legend), colour in zip(present, COLOURS):
            ax.plot(
                series.centres, np.degrees(series.values[name]), color=colour, lw=1, label=legend, **_markers(series)
            )
        ax.set_ylabel(label, fontsize=9)
        ax.axhline(0, color="0.6", lw=0.6, zorder=0)
        _angle_limits(ax, [np.degrees(series.values[name]) for name, _ in present])
        if not present:
            _note(ax, missing)
        elif not tracked:
            _note(ax, "no face tracked")
        else:
            _legend(ax)

    # Success as a filled step: per-frame 0/1 values read as notches, not as a comb of lines.
    quality_ax.stairs(
        np.nan_to_num(series.success), series.edges, fill=True, color=COLOURS[0], alpha=0.25, lw=0, label="success rate"
    )
    quality_ax.plot(series.centres, series.confidence, color="0.15", lw=1, label="mean confidence", **_markers(series))
    quality_ax.set_ylim(-0.05, 1.08)
    quality_ax.set_yticks([0, 0.5, 1])
    quality_ax.set_ylabel("tracking\n(0\u20131)", fontsize=9)
    quality_ax.set_xlabel("time (s)", fontsize=9)
    _legend(quality_ax)
    if aus and not tracked:
        _note(au_ax, "no face tracked")

    for ax in (pose_ax, gaze_ax, quality_ax):
        ax.grid(axis="y", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
    quality_ax.set_xlim(*x_range)
    figure.align_ylabels([pose_ax, gaze_ax, quality_ax])
    return figure, heading


def _au_label(column: str) -> str:
    number = int(AU_COLUMN.fullmatch(column).group(1))
    name = AU_NAMES.get(number)
    return f"AU{number:02d} {name}" if name else f"AU{number:02d}"


def _markers(series: _Series) -> dict:
    # A lone point draws no line; a marker makes a 1-frame video visible.
    return {"marker": "o", "ms": 3} if len(series.centres) < 3 else {}


def _angle_limits(ax, curves: list[np.ndarray]) -> None:
    """At least +-10 degrees, so tracking jitter of a still head does not look like motion."""
    finite = np.concatenate([c[np.isfinite(c)] for c in curves]) if curves else np.array([])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    low, high = min(low, -10.0), max(high, 10.0)
    margin = (high - low) * 0.05
    ax.set_ylim(low - margin, high + margin)


def _legend(ax) -> None:
    # Outside the axes, so it never hides data; constrained layout makes room.
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), borderaxespad=0, frameon=False, fontsize=8, handlelength=1.8)


def _note(ax, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=10,
        color="0.3",
        bbox={"facecolor": "white", "edgecolor": "0.8", "boxstyle": "round,pad=0.4"},
    )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d} min"
