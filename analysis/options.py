"""What a caller asks OpenFace for: capture type, faces, extra outputs; and what that means for a run.

The options are part of a job's identity and of every result blob's
metadata. Results of the default options (posed, one face, no extras) are
written where they always were, ``processed/<stem>.csv``; every other set of
options writes under a folder of its own, ``processed/_options/<tag>/``, so
results for different options never overwrite each other (analysis/names.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.config import IMAGE_EXECUTABLE, MULTI_FACE_EXECUTABLE, VIDEO_EXECUTABLE
from analysis.names import InvalidName
from media_rules import EXTRA_OUTPUTS, Faces, Media, MediaType, parse_extra_outputs, parse_faces

# Together these give OpenFace's full CSV and details file. The HOG, aligned-face
# and tracked files are only written when asked for (EXTRA_FLAGS).
OUTPUT_FLAGS = ("-2Dfp", "-3Dfp", "-pdmparams", "-pose", "-aus", "-gaze")
EXTRA_FLAGS = {"aligned": "-simalign", "hog": "-hogalign", "tracked": "-tracked"}


@dataclass(frozen=True)
class Options:
    media_type: MediaType = MediaType.POSED
    faces: Faces = Faces.SINGLE
    extra_outputs: tuple[str, ...] = ()

    @classmethod
    def parse(cls, media: Media, media_type: MediaType, faces: str | None, outputs: str | None) -> Options:
        """The options of a request; InvalidName says what is wrong with a bad one."""
        chosen_faces = Faces.SINGLE
        if faces is not None:
            chosen_faces = parse_faces(faces)
            if chosen_faces is None:
                raise InvalidName(f"faces must be 'single' or 'multi', not {faces[:40]!r}")
            if chosen_faces is Faces.MULTI and media is Media.IMAGE:
                raise InvalidName("faces=multi is for videos: FaceLandmarkImg already finds every face in an image")
        extras: tuple[str, ...] = ()
        if outputs is not None:
            parsed = parse_extra_outputs(outputs)
            if parsed is None:
                raise InvalidName(f"outputs must be a comma list of {', '.join(EXTRA_OUTPUTS)}; got {outputs[:80]!r}")
            extras = parsed
        return cls(media_type, chosen_faces, extras)

    @classmethod
    def of_job(cls, media_type: str, faces: str, extra_outputs: list[str]) -> Options:
        return cls(MediaType(media_type), Faces(faces), tuple(extra_outputs))

    def flags(self) -> list[str]:
        """OpenFace's command-line options, in a fixed order."""
        flags = list(OUTPUT_FLAGS) + [EXTRA_FLAGS[name] for name in self.extra_outputs]
        return flags + (["-wild"] if self.media_type is MediaType.WILD else [])

    def executable(self, media: Media) -> str:
        if media is Media.IMAGE:
            return IMAGE_EXECUTABLE
        return MULTI_FACE_EXECUTABLE if self.faces is Faces.MULTI else VIDEO_EXECUTABLE

    @property
    def tag(self) -> str | None:
        """The folder name of these options' results (``wild-multi-hog``); None for the defaults."""
        parts = (
            (["wild"] if self.media_type is MediaType.WILD else [])
            + (["multi"] if self.faces is Faces.MULTI else [])
            + list(self.extra_outputs)
        )
        return "-".join(parts) or None

    def metadata(self) -> dict[str, str]:
        """For each result blob's metadata."""
        return {
            "media_type": self.media_type.name.lower(),
            "faces": self.faces.value,
            "extra_outputs": ",".join(self.extra_outputs),
        }
