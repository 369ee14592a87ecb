"""Label mapping for box imports: class names of other tools' files (labelImg's `marlboro`,
a COCO category id such as 0) mapped onto sub- or meta-classes of the taxonomy.

A mapping file has one `name = code` (or `name,code` / tab separated) per line, `#` starts a
comment line, or is a JSON object {"name": "code"}. A COCO category id is written `#0`
(`id:0` also works). Names are matched case-insensitively."""

from __future__ import annotations

import copy
import json

from ..box_validation import AnnotationError, LabelIndex, LabelRef


def mapping_parse(text: str, *, source: str, labels: LabelIndex) -> dict[str, LabelRef]:
    """name (lower case) -> label; AnnotationError naming the file and line of every bad entry."""
    pairs: list[tuple[int | None, str, str]] = []
    errors: list[str] = []
    stripped = text.lstrip("\ufeff").strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{source}:{exc.lineno}: malformed JSON: {exc.msg}.")
        pairs = [(None, str(k), v if isinstance(v, str) else "") for k, v in obj.items()]
    else:
        for n, raw in enumerate(stripped.splitlines(), 1):
            line = raw.strip()
            if not line or (line.startswith("#") and not _is_id(line.split("=")[0].split(",")[0].strip())):
                continue
            for sep in ("=", ",", "\t"):
                if sep in line:
                    name, code = (p.strip() for p in line.split(sep, 1))
                    break
            else:
                errors.append(f"{source}:{n}: expected 'name = code', got {line!r}.")
                continue
            pairs.append((n, name, code))
    out: dict[str, LabelRef] = {}
    for n, name, code in pairs:
        where = f"{source}:{n}" if n else source
        ref = labels.resolve(code)
        if not name:
            errors.append(f"{where}: an empty name.")
        elif ref is None:
            errors.append(
                f"{where}: {name!r} maps to {code!r}, which is not a sub-class or meta-class of {labels.taxonomy}."
            )
        else:
            out[_key(name)] = ref
    if errors:
        raise AnnotationError([{"box": None, "field": "map", "message": e} for e in errors])
    return out


def _is_id(name: str) -> bool:
    return name.startswith("#") and name[1:].lstrip("-").isdigit()


def _key(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("id:"):
        name = "#" + name[3:].strip()
    return name


def category_key(category_id) -> str:
    """The mapping key of a COCO category id."""
    return f"#{category_id}"


def mapping_codes(mapping: dict[str, LabelRef]) -> dict[str, str]:
    """name -> taxonomy code: a parsed mapping as stored on a queued import (mapping_parse reads it back)."""
    return {name: ref.code for name, ref in mapping.items()}


def with_mapping(labels: LabelIndex, mapping: dict[str, LabelRef] | None) -> LabelIndex:
    """A LabelIndex that also resolves the mapped names (a mapping overrides a taxonomy name)."""
    if not mapping:
        return labels
    mapped = copy.copy(labels)
    mapped.by_key = {**labels.by_key, **mapping}
    mapped.mapping = mapping
    return mapped
