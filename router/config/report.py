"""What a config reader understood: which format it read, what it uses, what it ignores (with a
warning) and what it refuses as not supported. ``fusion-router check-config --summary`` prints it."""

from __future__ import annotations

from dataclasses import dataclass, field

NATIVE = "fusion-router"
VSR_V03 = "vllm-sr v0.3"


@dataclass
class ConfigReport:
    format: str = NATIVE
    used: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # loads; each is logged as a warning
    unsupported: list[str] = field(default_factory=list)  # errors: "... is not supported by fusion-router (...)"
    _ignored_keys: dict[str, int] = field(default_factory=dict, repr=False)

    def use(self, line: str) -> None:
        if line not in self.used:
            self.used.append(line)

    def ignore(self, where: str, why: str) -> None:
        """One line per (where, why), however many entries repeat it (``where`` may use ``[]``)."""
        key = f"{where}: {why}"
        if key not in self._ignored_keys:
            self._ignored_keys[key] = len(self.ignored)
            self.ignored.append(f"{where}: ignored ({why})")

    def refuse(self, line: str) -> None:
        if line not in self.unsupported:
            self.unsupported.append(line)

    def lines(self) -> list[str]:
        out = [f"format: {self.format}"]
        for title, items in (("used", self.used), ("ignored", self.ignored), ("unsupported", self.unsupported)):
            out.append(f"{title}: {len(items) or 'none'}")
            out += [f"  - {item}" for item in items]
        return out
