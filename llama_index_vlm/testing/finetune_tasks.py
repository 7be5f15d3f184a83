"""Small synthetic fine-tuning tasks on which a tiny checkpoint can be seen to learn.

- :func:`word_page_pairs`: pages that each show a few words, and queries naming them (for the
  retriever).
- :func:`colour_answer_examples`: plain coloured pages, and the question of their colour (for
  the answering model).

Used by the fine-tuning tests and by ``benchmarks/finetune.py``, so both measure the same task.
"""

from __future__ import annotations

from pathlib import Path

#: Words of the tiny tokenizers' corpus, so each is one or two tokens.
WORDS: tuple[str, ...] = (
    "revenue",
    "profit",
    "manual",
    "safety",
    "survey",
    "warranty",
    "signature",
    "address",
    "region",
    "expenses",
    "market",
    "roadmap",
)

#: Colours by name, for :func:`colour_answer_examples`.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "black": (0, 0, 0),
}


def word_page_pairs(
    folder: str | Path, n_pages: int = 8, templates: tuple[str, ...] = ("{word}",)
) -> list:
    """Write ``n_pages`` page images, each showing one word of :data:`WORDS` in large type,
    and return one :class:`~llama_index_vlm.finetune.pairs.TrainingPair` per page and template
    (a query naming the page's word).

    >>> import tempfile
    >>> pairs = word_page_pairs(tempfile.mkdtemp(), n_pages=2, templates=("{word}", "the {word}"))
    >>> [pair.query for pair in pairs]
    ['revenue', 'the revenue', 'profit', 'the profit']
    """
    from PIL import Image, ImageDraw, ImageFont

    from llama_index_vlm.finetune.pairs import TrainingPair

    if not 1 <= n_pages <= len(WORDS):
        raise ValueError(f"n_pages must be between 1 and {len(WORDS)}, not {n_pages}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=28)
    pairs = []
    for word in WORDS[:n_pages]:
        page = Image.new("RGB", (128, 128), "white")
        ImageDraw.Draw(page).text((4, 40), word, fill="black", font=font)
        path = folder / f"{word}.png"
        page.save(path)
        pairs += [TrainingPair(query=t.format(word=word), image=str(path)) for t in templates]
    return pairs


def colour_answer_examples(folder: str | Path) -> list:
    """Write one plain page per colour of :data:`COLOURS` and return the
    :class:`~llama_index_vlm.finetune.answerer.AnswerExample` asking for its colour.
    """
    from PIL import Image

    from llama_index_vlm.finetune.answerer import AnswerExample

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for name, rgb in COLOURS.items():
        path = folder / f"{name}.png"
        Image.new("RGB", (64, 64), rgb).save(path)
        examples.append(
            AnswerExample(question="What colour is the page?", answers=(name,), image=str(path))
        )
    return examples
