"""PaliGemma task prompts and location-token parsing, on synthetic answers."""

from __future__ import annotations

import pytest
from PIL import Image

from llama_index_vlm.paligemma import (
    answer_prompt,
    caption_prompt,
    detect_prompt,
    draw_detections,
    parse_detections,
    segment_prompt,
)


def test_caption_prompt_in_english_by_default():
    assert caption_prompt() == "caption en"


def test_caption_prompt_in_another_language():
    assert caption_prompt("de") == "caption de"


def test_answer_prompt_asks_the_stripped_question():
    assert answer_prompt("  What is the total? ") == "answer en What is the total?"


def test_detect_prompt_separates_labels_with_semicolons():
    assert detect_prompt("table", "signature") == "detect table ; signature"


def test_segment_prompt_names_its_label():
    assert segment_prompt("logo") == "segment logo"


def test_an_empty_question_is_refused():
    with pytest.raises(ValueError, match="empty"):
        answer_prompt("  ")


def test_a_label_with_a_separator_is_refused():
    with pytest.raises(ValueError, match="may not contain"):
        detect_prompt("a;b")


def test_a_blank_label_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        detect_prompt(" ")


def test_boxes_scale_each_axis_from_the_1024_grid_in_yxyx_order():
    text = "<loc0256><loc0000><loc0768><loc0512> invoice total"
    (detection,) = parse_detections(text, (2048, 1024))
    assert detection.label == "invoice total"
    assert detection.box == (0.0, 256.0, 1024.0, 768.0)  # left, top, right, bottom
    assert detection.yxyx == (256.0, 0.0, 768.0, 1024.0)


def test_several_objects_are_parsed_and_noise_ignored():
    text = (
        "<loc0000><loc0000><loc1023><loc1023> page ; "
        "<loc0512><loc0100><loc0600><loc0200> signature ; garbage <loc0001> tail"
    )
    detections = parse_detections(text, (1024, 1024))
    assert [d.label for d in detections] == ["page", "signature"]
    assert detections[1].box == (100.0, 512.0, 200.0, 600.0)


def test_swapped_corners_are_ordered_and_clamped():
    (detection,) = parse_detections("<loc0900><loc0800><loc0100><loc0200> x", (100, 100))
    left, top, right, bottom = detection.box
    assert left <= right and top <= bottom
    assert all(0 <= v <= 100 for v in detection.box)


def test_segment_codes_are_kept():
    codes = "".join(f"<seg{n:03d}>" for n in range(16))
    (detection,) = parse_detections(f"<loc0000><loc0000><loc0512><loc0512>{codes} logo", (64, 64))
    assert detection.segment_codes == tuple(range(16))
    assert detection.box == (0.0, 0.0, 32.0, 32.0)


def test_no_locations_means_no_detections():
    assert parse_detections("a cat on a mat", (10, 10)) == []


def test_draw_detections_outlines_boxes_on_a_copy():
    image = Image.new("RGB", (100, 100), "white")
    detections = parse_detections("<loc0000><loc0000><loc0512><loc0512> box", (100, 100))
    drawn = draw_detections(image, detections)
    assert drawn.getpixel((0, 25)) == (255, 0, 0)
    assert image.getpixel((0, 25)) == (255, 255, 255)
