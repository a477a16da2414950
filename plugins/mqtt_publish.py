"""`mqtt_publish`: publish a templated JSON (or text) payload to a templated topic.

```yaml
handlers:
  - intent: PlayMusic
    plugin: mqtt_publish
    options: {topic: "music/{site}/play", payload: {playlist: "{speaker.playlist}"}}
```
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from voiced.intents.api import Plugin, PluginOptions, Request, Response


class MqttPublishOptions(PluginOptions):
    """Options of `mqtt_publish`."""

    topic_fields: ClassVar[tuple[str, ...]] = ("topic",)

    topic: str
    payload: Any = None
    """A mapping or list (sent as JSON), or text; None sends the intent as JSON."""
    qos: int = Field(0, ge=0, le=2)
    retain: bool = False
    answer: str | None = None
    """Optional text to speak after publishing."""

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not value or "#" in value or "+" in value:
            raise ValueError("topic must be non-empty and contain no wildcards (# or +)")
        return value


class MqttPublishPlugin(Plugin):
    """Publishes a message for each handled intent."""

    name = "mqtt_publish"
    Options: ClassVar = MqttPublishOptions

    @staticmethod
    def targets(options: MqttPublishOptions) -> list[str]:
        """For protection rules: `mqtt:<topic>`."""
        return [f"mqtt:{options.topic}"]

    async def handle(self, request: Request) -> Response:
        """Publish the rendered payload."""
        opts: MqttPublishOptions = request.options
        payload = opts.payload
        if payload is None:
            payload = {
                "intent": request.intent.name,
                "slots": request.slots,
                "site": request.site,
                "speaker": request.speaker.name,
            }
        elif not isinstance(payload, dict | list | str):
            payload = str(payload)
        await self.context.publish(opts.topic, payload, qos=opts.qos, retain=opts.retain)
        return Response(text=opts.answer, data={"topic": opts.topic})
