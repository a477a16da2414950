"""`say`: answer with templated text, spoken on the satellite that asked.

```yaml
handlers:
  - intent: HassTurnOn
    plugin: say
    options: {text: "Turning on the {area} lights"}
```

The daemon delivers the text: `hermes/tts/say` for an external TTS, or built-in speech
sent as `playBytes` when a TTS program is installed and configured.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from voiced.intents.api import Plugin, PluginOptions, Request, Response


class SayOptions(PluginOptions):
    """Options of `say`."""

    text: str = Field(min_length=1)


class SayPlugin(Plugin):
    """Speaks a templated sentence."""

    name = "say"
    Options: ClassVar = SayOptions

    async def handle(self, request: Request) -> Response:
        """Return the rendered text for the daemon to speak."""
        opts: SayOptions = request.options
        return Response(text=opts.text, data={"said": opts.text})
