"""PaliGemma task prompts and the parsing of its location tokens.

PaliGemma mix checkpoints are steered by task prefixes (``caption en``, ``answer en <question>``,
``detect <label>``, ``segment <label>``) rather than by chat. Detection answers are location
tokens: ``<loc0256><loc0128><loc0768><loc0896> invoice total`` is a box whose corners are
``y_min, x_min, y_max, x_max`` on a 0..1023 grid over the whole image (the model sees the image
resized to a square, so each axis scales separately). Segmentation adds 16 ``<segNNN>`` codes that
PaliGemma's VQ-VAE decodes into a mask; they are parsed and kept here, not decoded.

Pure functions: text in, boxes in page pixels out; drawing uses Pillow only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from llama_index_vlm.images import to_rgb

#: Location tokens address a 1024-step grid on each axis.
LOCATION_BINS = 1024

_OBJECT = re.compile(r"((?:<loc\d{4}>){4})((?:<seg\d{3}>)*)\s*([^;<]*)")
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Detection:
    """One object PaliGemma located: its label and its box in page pixels.

    ``box`` is ``(left, top, right, bottom)`` as Pillow draws it; ``yxyx`` is the same box in
    PaliGemma's own ``(y_min, x_min, y_max, x_max)`` order. ``segment_codes`` holds the 16
    VQ-VAE codes of a ``segment`` answer (empty for ``detect``).
    """

    label: str
    box: tuple[float, float, float, float]
    segment_codes: tuple[int, ...] = field(default=())

    @property
    def yxyx(self) -> tuple[float, float, float, float]:
        left, top, right, bottom = self.box
        return (top, left, bottom, right)


def caption_prompt(language: str = "en") -> str:
    """The prompt for a caption: ``caption en``."""
    return f"caption {language}"


def answer_prompt(question: str, language: str = "en") -> str:
    """The prompt for visual question answering: ``answer en <question>``."""
    question = question.strip()
    if not question:
        raise ValueError("the question is empty")
    return f"answer {language} {question}"


def detect_prompt(*labels: str) -> str:
    """The prompt to detect one or several labels: ``detect table ; signature``."""
    return "detect " + " ; ".join(_labels(labels))


def segment_prompt(label: str) -> str:
    """The prompt to segment one label: ``segment logo``."""
    return "segment " + _labels([label])[0]


def _labels(labels) -> list[str]:
    cleaned = [label.strip() for label in labels if label and label.strip()]
    if not cleaned:
        raise ValueError("give at least one non-empty label")
    for label in cleaned:
        if ";" in label or "<" in label:
            raise ValueError(f"label {label!r} may not contain ';' or '<'")
    return cleaned


def parse_detections(text: str, image_size: tuple[int, int]) -> list[Detection]:
    """Parse a ``detect`` or ``segment`` answer into boxes on an image of ``image_size``.

    Args:
        text: the generated text, e.g. ``"<loc0000><loc0000><loc0512><loc1023> table"``;
            several objects are separated by ``;``. Anything that is not four location tokens
            followed by a label is ignored.
        image_size: ``(width, height)`` of the original page, in pixels.

    Returns:
        One :class:`Detection` per object, boxes clamped to the image and ordered so that
        ``left <= right`` and ``top <= bottom``.

    >>> parse_detections("<loc0256><loc0000><loc0768><loc0512> total", (2048, 1024))[0].box
    (0.0, 256.0, 1024.0, 768.0)
    """
    width, height = image_size
    detections = []
    for locations, segments, label in _OBJECT.findall(text):
        y_min, x_min, y_max, x_max = (int(n) for n in _NUMBER.findall(locations))
        top, bottom = sorted((y_min * height / LOCATION_BINS, y_max * height / LOCATION_BINS))
        left, right = sorted((x_min * width / LOCATION_BINS, x_max * width / LOCATION_BINS))
        box = (
            _clamp(left, width),
            _clamp(top, height),
            _clamp(right, width),
            _clamp(bottom, height),
        )
        codes = tuple(int(n) for n in _NUMBER.findall(segments))
        detections.append(Detection(label=label.strip(), box=box, segment_codes=codes))
    return detections


def _clamp(value: float, limit: int) -> float:
    return float(min(max(value, 0.0), float(limit)))


def draw_detections(
    image: Image.Image, detections: list[Detection], color: str = "red", width: int = 3
) -> Image.Image:
    """A copy of ``image`` with each detection's box outlined and labelled."""
    image = to_rgb(image).copy()
    draw = ImageDraw.Draw(image)
    for detection in detections:
        draw.rectangle(detection.box, outline=color, width=width)
        left, top = detection.box[0], detection.box[1]
        draw.text((left + width + 2, top + width + 1), detection.label, fill=color)
    return image
