"""Command-line argument types that refuse what can never work, with the bound in the message (pure).

``type=number(int, minimum=1)`` makes argparse print ``argument --count: must be at least 1, not 0``
(one line, exit 2, through the command line's parser) instead of letting a bad value reach a server.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def number(kind: Callable[[str], N], *, minimum: N | None = None, maximum: N | None = None, meaning: str = "") -> Callable[[str], N]:
    """An argparse ``type`` parsing ``kind`` within [minimum, maximum]; ``meaning`` explains a special value."""

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, not {text!r}") from None
        if value != value or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            low, high = (f"{bound:g}" if bound is not None else "" for bound in (minimum, maximum))
            bounds = (f"between {low} and {high}" if minimum is not None and maximum is not None
                      else f"at least {low}" if minimum is not None else f"at most {high}")
            raise argparse.ArgumentTypeError(f"must be {bounds}{meaning}, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse
