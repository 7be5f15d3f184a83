"""LlamaIndex chat messages to turns (vlm/messages.py), through HuggingFaceVLM.chat: what is
refused before a model runs, every image source, and the labels pages get from their text."""

from __future__ import annotations

import base64
import io

import pytest
from chats import png_bytes, question
from llama_index.core.base.llms.types import AudioBlock, ChatMessage, ImageBlock, TextBlock
from llama_index.core.schema import ImageNode, NodeWithScore
from PIL import Image

from llama_index_vlm.errors import EmptyInputError, UnreadableDocumentError

# -- refused before the model runs -----------------------------------------------------------


def test_no_messages_is_an_empty_input_error(vlms):
    with pytest.raises(EmptyInputError, match="no messages"):
        vlms("llava").chat([])


def test_an_image_without_a_question_is_an_empty_input_error(vlms):
    with pytest.raises(EmptyInputError, match="last user message has no text"):
        vlms("llava").chat([ChatMessage(role="user", blocks=[ImageBlock(image=png_bytes())])])


def test_a_blank_question_is_an_empty_input_error(vlms):
    with pytest.raises(EmptyInputError, match="last user message has no text"):
        vlms("llava").chat([ChatMessage(role="user", content="   ")])


def test_a_conversation_ending_with_the_assistant_is_an_empty_input_error(vlms):
    with pytest.raises(EmptyInputError, match="does not end with a user message"):
        vlms("llava").chat([*question(1), ChatMessage(role="assistant", content="Sure.")])


def test_bytes_that_are_not_an_image_are_unreadable_and_located(vlms):
    garbage = ImageBlock(image=b"this is not an image at all", image_mimetype="image/png")
    with pytest.raises(UnreadableDocumentError, match="message 0, image 1.*not an image"):
        vlms("llava").chat([ChatMessage(role="user", blocks=[garbage, TextBlock(text="What?")])])


def test_an_image_file_that_vanished_is_unreadable_and_named(vlms, tmp_path):
    vanished = tmp_path / "vanished.png"
    vanished.write_bytes(png_bytes())
    block = ImageBlock(path=vanished)  # pydantic checks the file exists when the block is made
    vanished.unlink()
    with pytest.raises(UnreadableDocumentError, match="vanished.png"):
        vlms("llava").chat([ChatMessage(role="user", blocks=[block, TextBlock(text="What?")])])


def test_an_audio_block_is_a_type_error(vlms):
    with pytest.raises(TypeError, match="'audio' block"):
        vlms("llava").chat(
            [ChatMessage(role="user", blocks=[AudioBlock(audio=b"RIFF"), TextBlock(text="?")])]
        )


# -- images ----------------------------------------------------------------------------------


def test_every_image_source_gives_the_same_prompt(vlms, seen, tmp_path):
    vlm = vlms("llava_next")
    data = png_bytes("red", (60, 100))
    path = tmp_path / "page.png"
    path.write_bytes(data)
    encoded = base64.b64encode(data)
    sources = [
        ImageBlock(image=data),
        ImageBlock(image=encoded),
        ImageBlock(path=path),
        ImageBlock(url=f"data:image/png;base64,{encoded.decode()}"),
    ]
    calls = seen(vlm)
    answers = {
        vlm.chat(
            [ChatMessage(role="user", blocks=[source, TextBlock(text="What?")])]
        ).message.content
        for source in sources
    }
    node = ImageNode(image=encoded.decode(), image_mimetype="image/png")
    answers.add(vlm.complete("What?", image_documents=[node]).text)
    answers.add(vlm.complete("What?", image_documents=[NodeWithScore(node=node, score=1.0)]).text)
    assert len(answers) == 1
    assert all((call["pixel_values"] == calls[0]["pixel_values"]).all() for call in calls)


@pytest.mark.parametrize(
    "image",
    [Image.new("RGBA", (30, 30), (0, 0, 0, 0)), Image.new("I;16", (30, 30), 65535)],
    ids=["transparent RGBA", "16-bit greyscale"],
)
def test_transparent_and_greyscale_pages_are_read_as_their_rgb_rendering(vlms, seen, image):
    vlm = vlms("llava")
    calls = seen(vlm)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    vlm.chat(
        [
            ChatMessage(
                role="user", blocks=[ImageBlock(image=buffer.getvalue()), TextBlock(text="?")]
            )
        ]
    )
    white = vlm.processor.image_processor(
        [Image.new("RGB", (30, 30), "white")], return_tensors="pt"
    )["pixel_values"]
    assert (calls[0]["pixel_values"] == white).all()


# -- labels ----------------------------------------------------------------------------------


def test_pages_are_labelled_by_their_metadata_and_citation_sources(vlms):
    blocks = [
        TextBlock(text="file_name: a.pdf\npage_number: 4 Source 1:"),
        ImageBlock(image=png_bytes("red")),
        TextBlock(text="Source 2:"),
        ImageBlock(image=png_bytes("blue")),
        ImageBlock(image=png_bytes("green")),
        TextBlock(text="Query: What?\nAnswer:"),
    ]
    answer = vlms("paligemma").chat([ChatMessage(role="user", blocks=blocks)]).message.content
    assert [line.split(": ")[0] for line in answer.split("\n")] == [
        "Source 1 (a.pdf, page 4)",
        "Source 2",
        "Image 3",
    ]
