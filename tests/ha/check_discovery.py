"""Checks thermalertd's Home Assistant MQTT discovery with Home Assistant's
own code (the `homeassistant` package from PyPI, in the environment
scripts/ha-schema-env.sh makes), for tests/homeassistant.rs.

Input (a JSON file named on the command line):
  {"configs": [{"topic": "...", "payload": "..."}],
   "messages": {"<topic>": ["<payload>", ...]}}

For each config it does what homeassistant.components.mqtt.discovery does
with a discovery message (the topic matcher, a JSON object, abbreviations,
the origin schema), then validates it with the platform's DISCOVERY_SCHEMA;
a key that schema drops (it removes unknown keys silently) is a problem too.
Then each template is rendered as the entity would render it, by
MqttValueTemplate, on every message given for its topic:
  - value_template (the state), and availability's value_template: no error;
  - json_attributes_template on the json_attributes_topic: the result must be
    a JSON object, as MqttAttributes requires (else Home Assistant logs
    "Erroneous JSON" or "JSON result was not a dictionary").
Prints one line per problem and exits 1 when there is any.
"""

import asyncio
import json
import logging
import sys
import tempfile

import voluptuous as vol
from homeassistant.components.mqtt import binary_sensor, sensor
from homeassistant.components.mqtt.abbreviations import (
    ABBREVIATIONS,
    DEVICE_ABBREVIATIONS,
    ORIGIN_ABBREVIATIONS,
)
from homeassistant.components.mqtt.discovery import (
    MQTT_ORIGIN_INFO_SCHEMA,
    SUPPORTED_COMPONENTS,
    TOPIC_MATCHER,
)
from homeassistant.components.mqtt.models import MqttValueTemplate
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import HomeAssistant
from homeassistant.util.json import json_loads, json_loads_object

SCHEMAS = {
    "sensor": sensor.DISCOVERY_SCHEMA,
    "binary_sensor": binary_sensor.DISCOVERY_SCHEMA,
}


class Collect(logging.Handler):
    """Home Assistant's own warnings while rendering templates."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def expand(payload):
    """The abbreviation expansion of discovery.py."""
    for key in list(payload):
        payload[ABBREVIATIONS.get(key, key)] = payload.pop(key)
    for sub, abbr in (("device", DEVICE_ABBREVIATIONS), ("origin", ORIGIN_ABBREVIATIONS)):
        if isinstance(payload.get(sub), dict):
            d = payload[sub]
            for key in list(d):
                d[abbr.get(key, key)] = d.pop(key)
    return payload


def render(hass, tpl, payload):
    """What the entity's MqttValueTemplate makes of one payload."""
    return MqttValueTemplate(tpl, hass=hass).async_render_with_possible_json_value(payload)


async def check(data):
    hass = HomeAssistant(tempfile.mkdtemp())
    log = Collect()
    logging.getLogger("homeassistant").addHandler(log)
    problems = []
    messages = data.get("messages", {})
    for c in data["configs"]:
        topic = c["topic"]
        where = topic
        # discovery.py: <prefix>/<component>/[<node_id>/]<object_id>/config
        trimmed = topic.split("/", 1)[1] if "/" in topic else topic
        match = TOPIC_MATCHER.match(trimmed)
        if not match:
            problems.append(f"{where}: not a discovery topic Home Assistant matches")
            continue
        component = match.group("component")
        if component not in SUPPORTED_COMPONENTS or component not in SCHEMAS:
            problems.append(f"{where}: component {component} not checked")
            continue
        try:
            payload = expand(json_loads_object(c["payload"]))
        except ValueError as e:
            problems.append(f"{where}: not a JSON object: {e}")
            continue
        sent = set(payload)
        try:
            if "origin" in payload:
                MQTT_ORIGIN_INFO_SCHEMA(payload["origin"])
            config = SCHEMAS[component](dict(payload))
        except vol.Invalid as e:
            problems.append(f"{where}: {component} DISCOVERY_SCHEMA: {e}")
            continue
        dropped = sent - set(config)
        if dropped:
            problems.append(f"{where}: keys Home Assistant does not know (dropped): {sorted(dropped)}")
        # The templates, on what the daemon published.
        renders = []
        if config.get("value_template") is not None and config.get("state_topic"):
            renders.append(("value_template", config["value_template"], config["state_topic"]))
        for a in config.get("availability") or []:
            if a.get("value_template") is not None:
                renders.append(("availability value_template", a["value_template"], a["topic"]))
        for name, tpl, on in renders:
            for m in messages.get(on, []):
                log.lines.clear()
                try:
                    render(hass, tpl, m)
                except Exception as e:  # what the entity would log
                    problems.append(f"{where}: {name} on {on} {m!r}: {type(e).__name__}: {e}")
                for w in log.lines:
                    problems.append(f"{where}: {name} on {on} {m!r}: Home Assistant warns: {w}")
        attrs_topic = config.get("json_attributes_topic")
        if attrs_topic:
            tpl = config.get("json_attributes_template")
            for m in messages.get(attrs_topic, []):
                # MqttAttributes: the template (if any), then json_loads.
                try:
                    out = render(hass, tpl, m) if tpl is not None else m
                    d = json_loads(out) if isinstance(out, str) else None
                    if not isinstance(d, dict):
                        problems.append(f"{where}: attributes from {m!r}: JSON result was not a dictionary")
                except ValueError:
                    problems.append(f"{where}: attributes from {m!r}: Erroneous JSON: {out!r}")
                except Exception as e:
                    problems.append(f"{where}: attributes from {m!r}: {type(e).__name__}: {e}")
    await hass.async_stop(force=True)
    return problems


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    problems = asyncio.run(check(data))
    for p in problems:
        print(p)
    print(f"checked {len(data['configs'])} config(s) with Home Assistant {HA_VERSION}: {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
