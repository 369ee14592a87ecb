"""A minimal XML tree that keeps each element's line number, for error messages."""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field


@dataclass
class Node:
    tag: str
    line: int
    attrs: dict
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list[Node]:
        return [c for c in self.children if c.tag == tag]

    def findtext(self, tag: str, default: str = "") -> str:
        node = self.find(tag)
        return node.text.strip() if node is not None else default


class XMLError(ValueError):
    def __init__(self, message: str, line: int | None):
        self.line = line
        super().__init__(message)


def parse_xml(data: bytes) -> Node:
    """A small expat tree builder that keeps each element's line; refuses DTDs/entities."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[Node] = []
    root: list[Node] = []

    def start(tag, attrs):
        node = Node(tag, parser.CurrentLineNumber, attrs)
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(tag):
        stack.pop()

    def chars(text):
        if stack:
            stack[-1].text += text

    def doctype(*args):
        raise XMLError("DOCTYPE/entity declarations are not accepted", parser.CurrentLineNumber)

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise XMLError(
            f"malformed XML: {xml.parsers.expat.ErrorString(exc.code)} (column {exc.offset + 1})", exc.lineno
        )
    if not root:
        raise XMLError("empty document", 1)
    return root[0]
