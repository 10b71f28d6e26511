"""Topic templates: '{site}/{area}/{line}/{asset}/{type}' filled in per event."""

from __future__ import annotations

from dataclasses import dataclass

from buffer import StoredEvent

from ..events import Lane, short_type
from ..settings.models import Config

MISSING = "_"


@dataclass(frozen=True)
class TopicRenderer:
    template: str
    site: str
    agent: str
    places: dict[str, tuple[str, str]]  # asset id -> (area, line)

    @classmethod
    def for_config(cls, template: str, config: Config) -> TopicRenderer:
        places = {a.id: (a.area or MISSING, a.line or MISSING) for a in config.assets}
        return cls(template, config.site, config.agent.id, places)

    def render(self, event: StoredEvent) -> str:
        area, line = self.places.get(event.subject, (MISSING, MISSING))
        return self.template.format(
            site=self.site, agent=self.agent, area=area, line=line, asset=event.subject,
            type=short_type(event.type) if event.type.startswith("floorlink.") else event.type,
            lane=Lane(event.lane).label)
