"""The reference semantics of a LlamaIndex filter group, shared by the filter and fuzz tests."""

from __future__ import annotations

from llama_index.core.vector_stores.types import FilterCondition, MetadataFilters


def combine(filters: MetadataFilters, results: list[bool]) -> bool:
    """A group's truth from its members' ``results``: AND (the default), OR, or NOT (none holds).

    >>> combine(MetadataFilters(filters=[], condition="or"), [False, True])
    True
    """
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return all(results)
    if condition == FilterCondition.OR:
        return any(results)
    return not any(results)
