"""YAML from users' files, read safely and within bounds: ``safe_load``'s plain types only, no aliases, bounded
nesting, no duplicate keys; and ``1e-3`` is a number, as in YAML 1.2 and JSON.

``yaml.safe_load`` runs no code, but an alias bomb (a few lines that expand to billions of nodes) grows a process past
its memory, a self-referencing alias or a deeply nested document ends in RecursionError, and a key written twice
silently keeps the second value. Recipes need none of these: aliases are refused (write the value out), nesting
deeper than :data:`MAX_DEPTH` is refused, and a duplicate key is an error naming its line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

#: Deepest nesting of mappings and lists accepted; a recipe needs fewer than 10 levels.
MAX_DEPTH = 64


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, nesting past MAX_DEPTH and duplicate mapping keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"the alias *{event.anchor} is not accepted (aliases can expand without bound); write the "
                            "value out where it is used", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels is not accepted", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice in one mapping (first on line "
                                    f"{seen[key].line + 1}); keep one", key_node.start_mark)
                seen[key] = key_node.start_mark
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                pass
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads 1e-3 as the string '1e-3' (its floats need a dot); YAML 1.2, JSON and every user read it as a number.
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
                                                                        r"[eE][-+]?[0-9]+$"), list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse ``text`` as :func:`yaml.safe_load` does, within the bounds above; a refusal is a ``yaml.YAMLError``
    with ``problem`` and ``problem_mark`` (line, column), like any YAML syntax error."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
