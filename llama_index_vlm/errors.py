"""The package's exceptions: one small hierarchy, each raised with a message saying what to do.

Every error a user can cause by bad input, a bad checkpoint or a mismatched index derives from
:class:`VLMError`, so an application can catch them all in one place. Errors about a bad value
also derive from :class:`ValueError`, so code written against plain Python conventions still
catches them.
"""

from __future__ import annotations


class VLMError(Exception):
    """Base class of every error raised by llama-index-vlm."""


class InvalidCheckpointError(VLMError, ValueError):
    """A path or name does not hold a checkpoint of a supported architecture."""


class MissingWeightsError(InvalidCheckpointError):
    """A checkpoint lacks weights that transformers would silently initialise at random.

    Attributes:
        missing: the names of the weights that are missing from the checkpoint.
    """

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = list(missing)


class EmptyInputError(VLMError, ValueError):
    """A call got nothing to work on: no images, or a query that is empty or only whitespace."""


class UnreadableDocumentError(VLMError):
    """A file could not be read as a PDF or an image.

    Attributes:
        path: the file that could not be read.
        reason: a short, human-readable reason.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read {path!r}: {reason}")
        self.path = str(path)
        self.reason = reason


class ModelMismatchError(VLMError):
    """Vectors from one model were about to be mixed with an index built by another."""


class UnsupportedFilterError(VLMError, ValueError):
    """A metadata filter uses an operator or value type the store cannot translate."""


class InvalidPageError(VLMError, ValueError):
    """A page given to the store is malformed: no image, vectors of the wrong shape or not
    finite, page fields of the wrong type, or text that cannot be stored. Nothing is written.
    """


class StoreError(VLMError):
    """The page store could not complete an operation; the last committed version is intact."""


class DamagedStoreError(StoreError):
    """Stored pages are damaged (their vectors are not finite numbers); re-ingest them.

    Attributes:
        page_ids: the damaged pages.
        doc_ids: the documents they belong to: delete and index these again.
    """

    def __init__(self, message: str, page_ids: list[str], doc_ids: list[str]):
        super().__init__(message)
        self.page_ids = list(page_ids)
        self.doc_ids = list(doc_ids)


class ContextWindowExceededError(VLMError, ValueError):
    """A prompt (text plus image tokens) does not fit in the model's context window."""


class UsageError(VLMError):
    """A command-line mistake (bad arguments, no index, a model that cannot be loaded); the
    command prints it as one ``error:`` line and exits with status 2.
    """


class InvalidRequestError(VLMError, ValueError):
    """A call's arguments ask for something it cannot do: ``delete_nodes`` with neither ids
    nor filters, a store query without query vectors or in a mode the store does not support,
    an ingest ``pool_factor`` below 1.
    """


class PageNotFoundError(VLMError, KeyError):
    """Pages asked for by id are not in the store.

    Attributes:
        page_ids: the ids that are not stored.
    """

    def __init__(self, message: str, page_ids: list[str]):
        super().__init__(message)
        self.page_ids = list(page_ids)

    def __str__(self) -> str:
        # KeyError shows its message quoted, as a key; this one is a sentence.
        return str(self.args[0])


class UnsupportedDeviceError(VLMError, ValueError):
    """The device a model loads on cannot do what was asked: a quantisation (bitsandbytes needs
    a CUDA GPU), an attention kernel, a dtype. The message says what works there instead.
    """


class TrainingDataError(VLMError, ValueError):
    """Fine-tuning data is unusable: a malformed line of a pairs or QA file, a page the store
    does not hold, an image that cannot be read, or too few examples to train and evaluate.
    """
