"""The errors a configuration produces: several at once, or no file found."""

from __future__ import annotations

from backends.errors import ConfigError


class ConfigErrors(ConfigError):
    """Several configuration errors at once. `.errors` lists them; str() shows them all."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, file=first.file, line=first.line, key=first.key,
                         expected=first.expected)

    def render(self) -> str:
        if len(self.errors) == 1:
            return self.errors[0].render()
        return f"{len(self.errors)} errors in configuration:\n" + "\n".join(
            e.render() for e in self.errors
        )


class ConfigNotFound(ConfigError):
    """No config file in any of the places looked at (the message lists them)."""

    def render(self) -> str:
        return self.message + (f" (expected {self.expected})" if self.expected else "")
