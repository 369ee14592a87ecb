"""What a box import did: counts and every problem with its file and line."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ImportReport:
    files: int = 0
    photos: int = 0
    boxes: int = 0
    created_cases: int = 0
    errors: list[dict] = field(default_factory=list)

    def error(self, file: str, line: int | None, message: str) -> None:
        self.errors.append({"file": file, "line": line, "message": message})

    def as_dict(self) -> dict:
        return {"files": self.files, "photos": self.photos, "boxes": self.boxes, "created_cases": self.created_cases,
                "errors": self.errors}

    def summary(self) -> str:
        return (f"{self.files} file(s): {self.boxes} box(es) on {self.photos} photo(s)"
                + (f", {self.created_cases} case(s) created" if self.created_cases else "")
                + (f"; {len(self.errors)} problem(s)" if self.errors else ""))
