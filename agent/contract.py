"""JSON Schemas of the event contract, one per event type.

`scripts/generate-schemas` writes them to docs/schemas/; a test keeps the files
current. Integrators validate against those files; floorlink's own tests do too.
Fields may be added in a minor release; none is ever renamed or removed within v1.
"""

from __future__ import annotations

from typing import Any

from .events import CONTRACT_VERSION, EVENT_LANES, full_type

TIME = {"type": "string", "format": "date-time",
        "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"}
NULLABLE_TIME = {"anyOf": [TIME, {"type": "null"}]}
TEXT = {"type": ["string", "null"]}
HOLD_REQUIRED = ["hold_id", "lot", "reason", "quantity", "work_order"]
HOLD_FIELDS: dict[str, Any] = {"lot": TEXT, "reason": TEXT,
                               "quantity": {"type": ["number", "null"]}, "work_order": TEXT}
STATES = ["running", "idle", "down", "setup", "planned_stop", "unknown"]

TELEMETRY_VALUE: dict[str, Any] = {
    "tag": {"type": "string", "description": "'<device>.<tag>'"},
    "device": {"type": "string"}, "name": {"type": "string"}, "value": {},
    "quality": {"enum": ["good", "uncertain", "bad"]},
    "quality_reason": {"type": "string", "description":
                       "Why the quality is bad when floorlink says so: 'not finite' "
                       "for a NaN or infinite value, sent as null."},
}

DATA: dict[str, dict[str, Any]] = {
    "machine.state_changed": {
        "required": ["state", "previous_state", "previous_duration_s", "code"],
        "properties": {
            "state": {"enum": STATES},
            "previous_state": {"enum": [*STATES, None]},
            "previous_duration_s": {"type": ["number", "null"], "minimum": 0,
                                    "description": "How long the previous state lasted."},
            "code": {"type": ["integer", "null"], "description": "The PLC's raw state code."},
        },
    },
    "downtime.started": {
        "required": ["downtime_id", "started_at", "reason_code", "reason", "work_order",
                     "start_estimated"],
        "properties": {
            "downtime_id": {"type": "string", "description": "This event's id."},
            "started_at": TIME,
            "reason_code": {"type": ["integer", "null"]},
            "reason": {"type": "string"},
            "work_order": TEXT,
            "start_estimated": {"type": "boolean", "description":
                                "True when the agent did not see the stop begin (it was offline "
                                "or just started): started_at is then the best known bound."},
        },
    },
    "downtime.ended": {
        "required": ["downtime_id", "started_at", "ended_at", "duration_s", "reason_code",
                     "reason", "work_order", "start_estimated"],
        "properties": {
            "downtime_id": {"type": "string", "description": "Id of the downtime.started event."},
            "started_at": TIME,
            "ended_at": TIME,
            "duration_s": {"type": "number", "minimum": 0},
            "reason_code": {"type": ["integer", "null"]},
            "reason": {"type": "string"},
            "work_order": TEXT,
            "start_estimated": {"type": "boolean"},
            "end_estimated": {"type": "boolean"},
            "reason_changes": {
                "type": "array",
                "description": "Reason codes that came up while the downtime lasted, in order.",
                "items": {"type": "object", "required": ["at", "reason_code", "reason"],
                          "properties": {"at": TIME, "reason_code": {"type": ["integer", "null"]},
                                         "reason": {"type": "string"}}},
            },
            "classified_by": {"type": ["string", "null"], "description":
                              "The person who gave the reason at the line page while the "
                              "stop went on; null when the reason is the PLC's."},
        },
    },
    "downtime.classified": {
        "required": ["downtime_id", "started_at", "ended_at", "part", "parts", "reason_code",
                     "reason", "reason_group", "classified_by", "replaces_plc_reason",
                     "plc_reason_code", "replaces", "work_order"],
        "properties": {
            "downtime_id": {"type": "string", "description": "Id of the downtime.started event."},
            "started_at": {**TIME, "description": "Start of the time this reason covers."},
            "ended_at": {**NULLABLE_TIME, "description":
                         "End of the time this reason covers; null while the stop goes on."},
            "part": {"enum": [1, 2], "description":
                     "Which part of the stop: 2 is the later part of a stop split in two."},
            "parts": {"enum": [1, 2], "description": "How many parts the stop has now."},
            "reason_code": {"type": "integer", "minimum": 1},
            "reason": {"type": "string"},
            "reason_group": TEXT,
            "classified_by": {"type": "string", "description": "The operator who chose it."},
            "replaces_plc_reason": {"type": "boolean", "description":
                                    "The PLC had named a reason, and this one replaces it."},
            "plc_reason_code": {"type": ["integer", "null"]},
            "replaces": {"type": ["string", "null"], "description":
                         "Id of the downtime.classified event this one replaces (the same part "
                         "of the same stop), or null. The effective reason of a part is its "
                         "latest classification: the highest sequence."},
            "work_order": TEXT,
        },
    },
    "downtime.micro_stop": {
        "required": ["started_at", "ended_at", "duration_s", "reason_code", "reason",
                     "work_order"],
        "properties": {
            "started_at": TIME, "ended_at": TIME,
            "duration_s": {"type": "number", "minimum": 0},
            "reason_code": {"type": ["integer", "null"]}, "reason": {"type": "string"},
            "work_order": TEXT,
        },
    },
    "production.confirmed": {
        "required": ["work_order", "good", "scrap", "good_total", "scrap_total", "unit",
                     "interval_start", "interval_end", "estimated"],
        "properties": {
            "work_order": TEXT,
            "good": {"type": "integer", "minimum": 0,
                     "description": "Good quantity since the previous confirmation."},
            "scrap": {"type": "integer", "minimum": 0},
            "good_total": {"type": "integer", "minimum": 0,
                           "description": "Cumulative good quantity for the work order."},
            "scrap_total": {"type": "integer", "minimum": 0},
            "unit": {"type": "string"},
            "interval_start": TIME,
            "interval_end": TIME,
            "estimated": {"type": "boolean", "description":
                          "True when a counter reset fell in a gap the agent could not see."},
            "trigger": {"enum": ["interval", "work_order_change", "shift_change", "stop"]},
            "micro_stops": {"type": "integer", "minimum": 0,
                            "description": "Micro-stops in the interval (when summarised)."},
            "gap": {
                "type": "object", "required": ["from", "to"],
                "properties": {"from": TIME, "to": TIME},
                "description": "The work order changed while the agent could not see the "
                "PLC (stopped, or the device unreachable) between these times: the gap's parts "
                "went to the order current before it, and this confirmation and the new "
                "order's first one are estimated.",
            },
            "held_back": {
                "type": "array",
                "description": "Counter readings no machine could make (beyond the type's "
                "range, not an integer, a jump beyond the plausible rate), held back since "
                "the last confirmation: booked as nothing. Present only when there were any.",
                "items": {"type": "object", "required": ["tag", "value"],
                          "properties": {"tag": {"type": "string"}, "value": {},
                                         "device": {"type": "string"}, "at": TIME}},
            },
            "lot": {"type": ["string", "null"], "description":
                    "The lot being produced, from the asset's production.lot tag; present "
                    "only when the asset maps one."},
            "micro_stop_s": {"type": "number", "minimum": 0},
        },
    },
    "quality.hold_raised": {
        "required": HOLD_REQUIRED,
        "properties": {**HOLD_FIELDS,
                       "hold_id": {"type": "string", "description": "This event's id."}},
    },
    "quality.hold_released": {
        "required": HOLD_REQUIRED,
        "properties": {**HOLD_FIELDS, "raised_at": TIME,
                       "hold_id": {"type": "string", "description":
                                   "Id of the hold_raised event."}},
    },
    "shift.completed": {
        "required": ["shift", "oee", "availability", "performance", "quality", "run_s",
                     "down_s", "idle_s", "setup_s", "planned_stop_s", "unknown_s", "no_data_s",
                     "micro_stop_s", "good", "scrap", "downtime_by_reason", "estimated",
                     "gaps"],
        "description": "A shift's figures, once per asset when the shift is over. No ERP "
        "record: the Odoo uplink never writes it. Rules in docs/events.md.",
        "properties": {
            "shift": {"type": "object", "required": ["start", "end", "label"],
                      "properties": {"start": TIME, "end": TIME, "label": {"type": "string"}}},
            **{key: {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                     "description": "0-1; null when it cannot be told (no planned time, "
                     "no parts, or, for performance and OEE, no oee.ideal_cycle)."}
               for key in ("oee", "availability", "performance", "quality")},
            **{key: {"type": "number", "minimum": 0} for key in (
                "run_s", "down_s", "idle_s", "setup_s", "planned_stop_s", "unknown_s",
                "no_data_s", "micro_stop_s")},
            "good": {"type": "integer", "minimum": 0},
            "scrap": {"type": "integer", "minimum": 0},
            "downtime_by_reason": {
                "type": "array",
                "items": {"type": "object", "required": ["reason", "minutes", "count"],
                          "properties": {"reason": {"type": "string"},
                                         "minutes": {"type": "number", "minimum": 0},
                                         "count": {"type": "integer", "minimum": 1}}}},
            "estimated": {"type": "boolean", "description":
                          "True when the agent was not running for part of the shift: the "
                          "state it last knew is assumed to have gone on (see gaps)."},
            "gaps": {"type": "array", "items": {
                "type": "object", "required": ["from", "to"],
                "properties": {"from": TIME, "to": TIME}}},
        },
    },
    "maintenance.requested": {
        "required": ["fault_code", "reason", "occurrences", "first_seen", "work_order"],
        "properties": {
            "fault_code": {"type": ["integer", "null"]}, "reason": {"type": "string"},
            "occurrences": {"type": "integer", "minimum": 1}, "first_seen": TIME,
            "work_order": TEXT,
            "trigger": {"enum": ["persists", "repeats"]},
        },
    },
    "counters.snapshot": {
        "required": ["counters", "work_order"],
        "properties": {
            "counters": {"type": "object", "additionalProperties": {"type": "number"}},
            "work_order": TEXT,
        },
    },
    "telemetry": {
        "required": ["tag", "value", "quality"],
        "properties": TELEMETRY_VALUE,
    },
    "telemetry.batch": {
        "required": ["values"],
        "properties": {
            "values": {
                "type": "array", "minItems": 1, "maxItems": 500,
                "description": "The values one derivation step published for this subject, "
                               "in the order derived; each as in floorlink.telemetry.v1, "
                               "with its own time.",
                "items": {"type": "object", "required": ["tag", "value", "quality", "at"],
                          "properties": {**TELEMETRY_VALUE, "at": TIME}},
            },
        },
    },
    "device.status": {
        "required": ["device", "status", "last_sample_at", "offline_s"],
        "description": "A device stopped delivering values (offline), or delivers again "
        "(online). The subject is the device. In the telemetry lane, in order with the "
        "device's telemetry. Once per outage, across agent restarts. Rules in "
        "docs/events.md.",
        "properties": {
            "device": {"type": "string"},
            "status": {"enum": ["offline", "online"]},
            "last_sample_at": {**TIME, "description":
                               "The device's last value before the outage (the agent's "
                               "start, when the device was down from it)."},
            "offline_s": {"type": ["number", "null"], "minimum": 0, "description":
                          "online only: from the last value before the outage to the "
                          "first after it."},
        },
    },
}


def event_schema(short: str) -> dict[str, Any]:
    lane = EVENT_LANES[short].label
    data = {"type": "object", **DATA[short]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://floorlink.dev/schemas/{full_type(short)}.json",
        "title": full_type(short),
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "lane",
                     "sequence", "epoch", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "UUIDv7; deduplicate on it.",
                   "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                              "[0-9a-f]{12}$"},
            "source": {"type": "string", "pattern": "^floorlink://[^/]+/[^/]+/[^/]+$"},
            "type": {"const": full_type(short)},
            "time": TIME,
            "subject": {"type": "string", "description": "The asset id."},
            "datacontenttype": {"const": "application/json"},
            "lane": {"const": lane},
            "sequence": {"type": "integer", "minimum": 1, "description":
                         "Per subject and lane, +1 per event, restarting with a new epoch."},
            "epoch": {"type": "integer", "description": "Changes when a fresh buffer starts."},
            "data": data,
        },
    }


def all_event_schemas() -> dict[str, dict[str, Any]]:
    return {f"{full_type(short)}.json": event_schema(short) for short in DATA}


__all__ = ["CONTRACT_VERSION", "all_event_schemas", "event_schema"]
