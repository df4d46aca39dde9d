"""Result files made from what OpenFace wrote: details that name the media, aligned faces as one zip,
and one table of every image a job analysed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

# Details-file lines that name a file, and the output each names once uploaded (None: the input).
_DETAILS_LINES = {
    "Input:": None,
    "Input full path:": None,
    "Output HOG:": "hog",
    "Output image:": "tracked_image",
    "Output video:": "tracked_video",
    "Output aligned directory:": "aligned",
    "Output csv:": "csv",
}
TABLE_SOURCE_COLUMN = "source_blob"


def details_text(path: Path, container: str, blob_name: str, names: dict[str, str], uploaded: Iterable[str]) -> bytes:
    """OpenFace's ``_of_details.txt`` with the worker's file names replaced by blob names.

    OpenFace names its temporary copy (``/tmp/openface-job-.../in/m00000.jpg``);
    a reader of the results needs the source blob and the result blobs instead.
    Outputs that were not uploaded keep OpenFace's own name.
    """
    uploaded = set(uploaded)
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        for prefix, key in _DETAILS_LINES.items():
            if line.startswith(prefix):
                if key is None:
                    line = prefix + (blob_name if prefix == "Input:" else f"{container}/{blob_name}")
                elif names[key] in uploaded:
                    line = prefix + names[key]
                break
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def zip_folder(folder: Path, archive: Path) -> Path:
    """The files of OpenFace's aligned-face folder as one zip: hundreds of BMPs would flood the container."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for item in sorted(folder.iterdir()):
            if item.is_file():
                out.write(item, item.name)
    return archive


def write_table(parts: Iterable[tuple[str, Path]], table: Path) -> int:
    """One CSV of every (source blob, OpenFace CSV) part: a leading ``source_blob`` column, then
    OpenFace's columns and values exactly as written. Returns the number of rows.

    Parts whose header differs from the first part's are refused with ValueError:
    a table with shifted columns would be worse than none.
    """
    header = None
    rows = 0
    with table.open("w", newline="") as out:
        for source, path in parts:
            with path.open(newline="") as part:
                part_header = part.readline().rstrip("\r\n")
                if header is None:
                    header = part_header
                    out.write(f"{TABLE_SOURCE_COLUMN}, {header}\n")
                elif part_header != header:
                    raise ValueError(f"the CSV of {source} has other columns than the first one's")
                field = _csv_field(source)
                for line in part:
                    line = line.rstrip("\r\n")
                    if line:
                        out.write(f"{field}, {line}\n")
                        rows += 1
    return rows


# A spreadsheet reads a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_field(text: str) -> str:
    """A CSV field of a name from outside (a blob name): quoted when it must be, never a formula.

    A name starting like a formula gets a leading apostrophe, as spreadsheets
    themselves mark text, and is quoted.
    """
    if text.startswith(_FORMULA_STARTS):
        text = "'" + text
    if any(ch in text for ch in ",\"\r\n\t'") or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text
