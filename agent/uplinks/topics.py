"""Topic templates: '{site}/{area}/{line}/{asset}/{type}' filled in per event."""

from __future__ import annotations

from dataclasses import dataclass, field

from buffer import StoredEvent

from ..events import Lane, short_type
from ..settings.models import Config

MISSING = "_"
RENDERED_KEPT = 10_000


@dataclass(frozen=True)
class TopicRenderer:
    template: str
    site: str
    agent: str
    places: dict[str, tuple[str, str]]  # asset id -> (area, line)
    # Topics already rendered, by (subject, type, lane): a handful per asset, looked up
    # for every message. Bounded by the config's subjects times the contract's types.
    _rendered: dict[tuple[str, str, int], str] = field(default_factory=dict, compare=False)

    @classmethod
    def for_config(cls, template: str, config: Config) -> TopicRenderer:
        places = {a.id: (a.area or MISSING, a.line or MISSING) for a in config.assets}
        return cls(template, config.site, config.agent.id, places)

    def render(self, event: StoredEvent) -> str:
        key = (event.subject, event.type, event.lane)
        topic = self._rendered.get(key)
        if topic is None:
            if len(self._rendered) >= RENDERED_KEPT:  # old subjects from a past config
                self._rendered.clear()
            topic = self._rendered[key] = self._render(event)
        return topic

    def _render(self, event: StoredEvent) -> str:
        area, line = self.places.get(event.subject, (MISSING, MISSING))
        kind = short_type(event.type) if event.type.startswith("floorlink.") else event.type
        return self.template.format(
            site=self.site, agent=self.agent, area=area, line=line, asset=event.subject,
            type=kind, type_path=kind.replace(".", "/"), lane=Lane(event.lane).label)
