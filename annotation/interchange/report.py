"""What a box import did: counts and every problem with its file and line."""

from __future__ import annotations

from dataclasses import dataclass, field

# A hostile or broken file can carry a problem per object; the first ones say what is wrong.
MAX_ERRORS_KEPT = 1000


@dataclass
class ImportReport:
    files: int = 0
    photos: int = 0
    boxes: int = 0
    created_cases: int = 0
    clipped: int = 0  # boxes reaching past the photo's edge, cut to it
    errors: list[dict] = field(default_factory=list)
    errors_not_kept: int = 0
    dry_run: bool = False  # counted as if imported, then rolled back
    created_files: list[str] = field(default_factory=list)  # photo files stored for created cases

    def error(self, file: str, line: int | None, message: str) -> None:
        if len(self.errors) >= MAX_ERRORS_KEPT:
            self.errors_not_kept += 1
            return
        self.errors.append({"file": file, "line": line, "message": message})

    @property
    def n_errors(self) -> int:
        return len(self.errors) + self.errors_not_kept

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "photos": self.photos,
            "boxes": self.boxes,
            "created_cases": self.created_cases,
            "clipped": self.clipped,
            "dry_run": self.dry_run,
            "errors": self.errors,
            "errors_not_kept": self.errors_not_kept,
        }

    def summary(self) -> str:
        return (
            ("Dry run, nothing stored. Would import: " if self.dry_run else "")
            + f"{self.files} file(s): {self.boxes} box(es) on {self.photos} photo(s)"
            + (f", {self.created_cases} case(s) created" if self.created_cases else "")
            + (f", {self.clipped} box(es) clipped to the photo's edges" if self.clipped else "")
            + (f"; {self.n_errors} problem(s)" if self.n_errors else "")
            + (f" (the first {len(self.errors)} listed)" if self.errors_not_kept else "")
        )
