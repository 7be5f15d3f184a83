"""Training pairs for the retriever: a query and the page (or image) it should find.

A pairs file is JSON Lines, one pair per line, the page named in one of three ways::

    {"query": "2023 revenue by region", "page_id": "3f2a...-p4"}
    {"query": "warranty period", "doc_id": "3f2a...", "page_number": 7}
    {"query": "a red bicycle", "image": "photos/bike.jpg"}

Optional keys: ``"negative_page_id"`` / ``"negative_image"`` (a hard negative: a page that
looks relevant but is not), and ``"synthetic": true`` for pairs a model drafted rather than a
person wrote (:func:`draft_pairs` sets it). Relative image paths are read from the file's
folder. Pages named by id are read from a :class:`~llama_index_vlm.store.LanceDBPageStore`.

Example::

    pairs = load_pairs("pairs.jsonl")
    train, held_out = split_pairs(pairs, eval_fraction=0.2, seed=0)
    images = PageImages(store)
    images.by_key(train[0].page_key)  # the PIL image of its page
"""

from __future__ import annotations

import json
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_vlm.errors import TrainingDataError, UnreadableDocumentError
from llama_index_vlm.pages import page_id_for

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from PIL import Image

    from llama_index_vlm.store import LanceDBPageStore

#: The question a model is asked about each page by :func:`draft_pairs`.
DRAFT_PROMPT = (
    "Write one short question that a reader could answer only by looking at this page. "
    "Reply with the question alone."
)

_IMAGE_PREFIX = "image:"


def page_key(page_id: str | None, image: str | None) -> str:
    """One string naming a page: its page id, or ``"image:<path>"`` for an image file.

    >>> page_key("abc-p3", None), page_key(None, "/photos/bike.jpg")
    ('abc-p3', 'image:/photos/bike.jpg')
    """
    if (page_id is None) == (image is None):
        raise ValueError("a page is named by a page id or by an image path, not both or neither")
    return page_id if page_id is not None else _IMAGE_PREFIX + image


def with_page_key(record: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
    """``record`` plus the JSON keys naming the page ``key`` (``page_id`` or ``image``)."""
    if key.startswith(_IMAGE_PREFIX):
        return {**record, f"{prefix}image": key[len(_IMAGE_PREFIX) :]}
    return {**record, f"{prefix}page_id": key}


def parse_page(
    record: dict[str, Any], base_dir: Path | None, where: str
) -> tuple[str | None, str | None]:
    """``(page_id, image)`` of a JSON record naming a page by ``page_id``, ``doc_id`` +
    ``page_number``, or ``image`` (a path, relative to ``base_dir``); exactly one is set.

    Raises:
        TrainingDataError: the page is named in no way, in two ways, or badly.
    """
    page_id = _page_id(record, where)
    image = _image_path(record.get("image"), base_dir, where, "image")
    if (page_id is None) == (image is None):
        raise TrainingDataError(
            f'{where}: name the page by exactly one of "page_id", "doc_id" + '
            '"page_number", or "image" (a file path)'
        )
    return page_id, image


@dataclass(frozen=True)
class TrainingPair:
    """A query and the page it should retrieve (a stored page, or an image file).

    Attributes:
        query: the query text.
        page_id: the stored page, when the page is in a store.
        image: the path of an image file, when the page is not in a store.
        negative_page_id: a stored hard negative, optional.
        negative_image: an image file as hard negative, optional.
        synthetic: drafted by a model (:func:`draft_pairs`), not written by a person.
    """

    query: str
    page_id: str | None = None
    image: str | None = None
    negative_page_id: str | None = None
    negative_image: str | None = None
    synthetic: bool = False

    @property
    def page_key(self) -> str:
        """What identifies the pair's page among all pages (see :func:`page_key`)."""
        return page_key(self.page_id, self.image)

    @property
    def negative_key(self) -> str | None:
        """The key of the hard negative, or None."""
        if self.negative_page_id is None and self.negative_image is None:
            return None
        return page_key(self.negative_page_id, self.negative_image)

    @property
    def keys(self) -> list[str]:
        """The keys of every page the pair names (its page, and its hard negative if any)."""
        return [key for key in (self.page_key, self.negative_key) if key is not None]

    def to_json(self) -> dict[str, Any]:
        """The pair as a JSON Lines record (only the keys that are set)."""
        return {key: value for key, value in asdict(self).items() if value not in (None, False)}


def parse_pair(
    record: dict[str, Any], base_dir: Path | None = None, where: str = "pair"
) -> TrainingPair:
    """One JSON record as a :class:`TrainingPair`; ``where`` names it in errors.

    >>> parse_pair({"query": "revenue", "doc_id": "abc", "page_number": 3}).page_id
    'abc-p3'

    Raises:
        TrainingDataError: no query, or no page (or two ways of naming it).
    """
    if not isinstance(record, dict):
        raise TrainingDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise TrainingDataError(f'{where}: "query" must be a non-empty string')
    page_id, image = parse_page(record, base_dir, where)
    negative_page_id = record.get("negative_page_id")
    if negative_page_id is not None and not isinstance(negative_page_id, str):
        raise TrainingDataError(f'{where}: "negative_page_id" must be a string')
    return TrainingPair(
        query=query.strip(),
        page_id=page_id,
        image=image,
        negative_page_id=negative_page_id,
        negative_image=_image_path(record.get("negative_image"), base_dir, where, "negative_image"),
        synthetic=bool(record.get("synthetic", False)),
    )


def load_pairs(path: str | os.PathLike[str]) -> list[TrainingPair]:
    """Read a JSON Lines pairs file (see the module's docstring); blank lines are skipped.

    Raises:
        TrainingDataError: a line is not JSON or not a pair (the message gives its number),
            or the file holds no pairs.
        OSError: the file cannot be read.
    """
    path = Path(path)
    pairs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TrainingDataError(f"{where}: not JSON ({error.msg})") from None
            pairs.append(parse_pair(record, path.parent, where))
    if not pairs:
        raise TrainingDataError(f"{path} holds no pairs; write one JSON object per line")
    return pairs


def save_pairs(pairs: Iterable[TrainingPair], path: str | os.PathLike[str]) -> Path:
    """Write pairs as JSON Lines (the format :func:`load_pairs` reads); return the path."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as out:
        for pair in pairs:
            out.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
    return path


def split_pairs(
    pairs: Sequence[TrainingPair], eval_fraction: float = 0.2, seed: int = 0
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Shuffle ``pairs`` with ``seed`` and hold out ``eval_fraction`` of them for evaluation.

    Both parts get at least one pair. The same pairs and seed always give the same split.

    Raises:
        TrainingDataError: fewer than two pairs, or a fraction outside (0, 1).
    """
    if not 0 < eval_fraction < 1:
        raise TrainingDataError(f"eval_fraction must be between 0 and 1, not {eval_fraction}")
    if len(pairs) < 2:
        raise TrainingDataError(
            f"{len(pairs)} pair(s) cannot be split into a training and a held-out part; "
            "give at least two"
        )
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    n_eval = min(len(shuffled) - 1, max(1, round(len(shuffled) * eval_fraction)))
    return shuffled[n_eval:], shuffled[:n_eval]


def training_split(
    items: Sequence[Any],
    eval_items: Sequence[Any] | None,
    eval_fraction: float,
    seed: int,
    store: LanceDBPageStore | None,
    keys: Callable[[Any], Iterable[str]],
) -> tuple[list[Any], list[Any], PageImages]:
    """The training and held-out parts of ``items`` (pairs or QA examples): ``eval_items`` if
    given, else a split by :func:`split_pairs`; and the images they name, checked to exist.

    Raises:
        TrainingDataError: a part is empty, or an item names a page or image that is missing.
    """
    if eval_items is None:
        train, held_out = split_pairs(items, eval_fraction, seed)
    else:
        train, held_out = list(items), list(eval_items)
    if not train or not held_out:
        raise TrainingDataError("fine-tuning needs at least one training and one held-out example")
    images = PageImages(store)
    images.check(key for item in [*train, *held_out] for key in keys(item))
    return train, held_out, images


class PageImages:
    """Loads page images by page key (:func:`page_key`): stored pages from a store, image
    files from disk.

    Keeps the most recently used images (``cache_size``), so an epoch over pairs that share
    pages reads each page once.
    """

    def __init__(self, store: LanceDBPageStore | None = None, cache_size: int = 256) -> None:
        self.store = store
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Image.Image] = OrderedDict()

    def check(self, keys: Iterable[str]) -> None:
        """Refuse page keys that name nothing, before any training starts.

        Raises:
            TrainingDataError: a key names a stored page but there is no store, or the store
                lacks it, or an image file does not exist.
        """
        keys = set(keys)
        page_ids = {key for key in keys if not key.startswith(_IMAGE_PREFIX)}
        if page_ids and self.store is None:
            raise TrainingDataError(
                "the data names stored pages (page_id or doc_id + page_number); give the store "
                "that holds them (--store)"
            )
        missing = sorted(page_ids - set(self.store.page_ids())) if page_ids else []
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise TrainingDataError(
                f"{len(missing)} page(s) named by the data are not in the store at "
                f"{self.store.uri}: {shown}"
            )
        for key in sorted(keys - page_ids):
            path = key[len(_IMAGE_PREFIX) :]
            if not os.path.isfile(path):
                raise TrainingDataError(f"the image {path!r} is missing")

    def by_key(self, key: str) -> Image.Image:
        """The image of a page key (:attr:`TrainingPair.page_key`)."""
        image = self._cache.get(key)
        if image is None:
            image = self._load(key)
            self._cache[key] = image
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return image

    def _load(self, key: str) -> Image.Image:
        from llama_index_vlm.images import decode_image
        from llama_index_vlm.pages import page_image

        if key.startswith(_IMAGE_PREFIX):
            path = key[len(_IMAGE_PREFIX) :]
            try:
                return decode_image(Path(path).read_bytes())
            except (OSError, ValueError) as error:
                raise UnreadableDocumentError(path, str(error)) from error
        nodes = self.store.get_nodes([key]) if self.store is not None else []
        if not nodes:
            raise TrainingDataError(f"page {key!r} is not in the store")
        return page_image(nodes[0])


def draft_pairs(
    store: LanceDBPageStore,
    vlm: Any,
    page_ids: Sequence[str] | None = None,
    questions_per_page: int = 1,
    prompt: str = DRAFT_PROMPT,
    show_progress: bool = True,
) -> list[TrainingPair]:
    """Draft training pairs for stored pages with an answering model: synthetic labels.

    Each page is shown to ``vlm`` (a :class:`~llama_index_vlm.vlm.HuggingFaceVLM` or any
    LlamaIndex multimodal LLM) with ``prompt``; the first line of its reply becomes a query for
    that page, marked ``synthetic=True``. Review them before training: a model that misreads a
    page teaches the retriever its mistake. Asking several questions per page samples the model
    (set ``do_sample=True`` on it) and keeps distinct ones.

    Returns:
        The pairs, in page order; pages the model gave no question for are skipped.
    """
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
    from tqdm.auto import tqdm

    from llama_index_vlm.pages import node_image

    page_ids = list(page_ids) if page_ids is not None else store.page_ids()
    pairs: list[TrainingPair] = []
    for page_id in tqdm(page_ids, desc="Drafting questions", disable=not show_progress):
        (node,) = store.get_nodes([page_id]) or [None]
        if node is None:
            raise TrainingDataError(f"page {page_id!r} is not in the store at {store.uri}")
        image_bytes, mimetype = node_image(node)
        message = ChatMessage(
            role="user",
            blocks=[ImageBlock(image=image_bytes, image_mimetype=mimetype), TextBlock(text=prompt)],
        )
        drafted: set[str] = set()
        for _ in range(questions_per_page):
            question = _first_line(str(vlm.chat([message]).message.content or ""))
            if question and question not in drafted:
                drafted.add(question)
                pairs.append(TrainingPair(query=question, page_id=page_id, synthetic=True))
    return pairs


def _page_id(record: dict[str, Any], where: str) -> str | None:
    page_id = record.get("page_id")
    doc_id, page_number = record.get("doc_id"), record.get("page_number")
    if page_id is not None:
        if not isinstance(page_id, str) or not page_id:
            raise TrainingDataError(f'{where}: "page_id" must be a non-empty string')
        if (
            doc_id is not None
            and page_number is not None
            and page_id_for(doc_id, page_number) != page_id
        ):
            raise TrainingDataError(f'{where}: "page_id" and "doc_id" + "page_number" disagree')
        return page_id
    if doc_id is None and page_number is None:
        return None
    if not isinstance(doc_id, str) or not isinstance(page_number, int) or page_number < 1:
        raise TrainingDataError(
            f'{where}: "doc_id" must be a string and "page_number" a whole number from 1'
        )
    return page_id_for(doc_id, page_number)


def _image_path(value: Any, base_dir: Path | None, where: str, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TrainingDataError(f'{where}: "{key}" must be a file path')
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path.resolve())


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().strip('"').strip()
        if line:
            return line
    return ""
