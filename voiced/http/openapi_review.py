"""The review queue's part of the OpenAPI document (voiced.http.api_review), as data."""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_NSTR = {"type": "string", "nullable": True}
_NUM = {"type": "number"}
_NNUM = {"type": "number", "nullable": True}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object", "additionalProperties": True}
_ERRORS = {400: "bad input (the error names the field and what was expected)",
           404: "no such item or proposal", 409: "the review queue is off, or the item's "
           "state does not allow it (the error says which)",
           422: "the learned file did not reload (it was put back)",
           503: "not ready"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ref("Error"), _ERRORS[s]) for s in statuses}


def _id(what: str) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "description": what,
            "schema": _INT}


def _body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": properties}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


_BY = {"by": {"type": "string", "maxLength": 64, "description": "who decides (a name; "
                                                                "default: someone)"}}

SCHEMAS: dict[str, Any] = {
    "ReviewItem": {"type": "object", "properties": {
        "id": _INT, "status": {"type": "string", "enum": ["pending", "corrected", "discarded"]},
        "reason": {"type": "string", "description": "no_match, empty, low_confidence, "
                                                    "refused or marked_wrong"},
        "queued_at": _NUM, "utterance": _ref("HistoryItem"),
        "audio": {"type": "string", "nullable": True, "description": "URL of its audio"},
        "audio_bytes": {"type": "integer", "nullable": True},
        "correction": {"type": "object", "nullable": True, "properties": {
            "text": _STR, "intent": _NSTR, "slots": _OBJ, "not_command": _BOOL,
            "speaker": _NSTR, "profile": _NSTR}},
        "decided_by": _NSTR, "decided_via": _NSTR, "decided_at": _NNUM}},
    "Proposal": {"type": "object", "description": "kind sentence: sentence, slots, heard_as; "
                 "kind alias: list, heard, value, out", "properties": {
        "id": _INT, "kind": {"type": "string", "enum": ["sentence", "alias"]},
        "language": _STR, "intent": _NSTR, "sentence": _STR, "slots": _OBJ,
        "heard_as": _NSTR, "list": _STR, "heard": _STR, "value": _STR, "out": {},
        "support": _INT, "items": {"type": "array", "items": _INT},
        "status": {"type": "string", "enum": ["watching", "pending", "accepted", "rejected"]},
        "decided_by": _NSTR, "decided_at": _NNUM}},
}

PATHS: dict[str, Any] = {
    "/api/review": {
        "get": {"summary": "The review queue: items in one status, newest first",
                "parameters": [
                    {"name": "status", "in": "query", "required": False, "schema": {
                        "type": "string", "enum": ["pending", "corrected", "discarded", "all"]},
                     "description": "default pending"},
                    {"name": "limit", "in": "query", "required": False, "schema": _INT,
                     "description": "1-500 (default 50)"},
                    {"name": "offset", "in": "query", "required": False, "schema": _INT}],
                "responses": {"200": _json({"type": "object", "properties": {
                    "items": {"type": "array", "items": _ref("ReviewItem")}, "total": _INT,
                    "counts": {"type": "object", "additionalProperties": _INT},
                    "limit": _INT, "offset": _INT}}, "a page"), **_errors(400, 409)}},
        "post": {"summary": "Mark a history utterance wrong: it enters the queue",
                 "requestBody": _body({"utterance": {"type": "integer", "description":
                                                     "history id"}, **_BY}, ["utterance"]),
                 "responses": {"201": _json(_ref("ReviewItem"), "queued"),
                               "200": _json(_ref("ReviewItem"), "it was queued already"),
                               **_errors(400, 404, 409)}}},
    "/api/review/intents": {"get": {
        "summary": "The intents and their slots, to pick what an utterance meant",
        "responses": {"200": _json({"type": "object", "properties": {
            "language": _NSTR, "intents": {"type": "array", "items": {
                "type": "object", "properties": {
                    "name": _STR, "slots": {"type": "array", "items": _STR}}}}}},
            "intents"), **_errors(409)}}},
    "/api/review/proposals": {"get": {
        "summary": "What corrections teach: sentences and aliases to accept or reject",
        "parameters": [{"name": "status", "in": "query", "required": False, "schema": {
            "type": "string", "enum": ["watching", "pending", "accepted", "rejected", "all"]},
            "description": "default pending (offered)"}],
        "responses": {"200": _json({"type": "object", "properties": {
            "proposals": {"type": "array", "items": _ref("Proposal")}}}, "proposals"),
            **_errors(400, 409)}}},
    "/api/review/proposals/{id}/accept": {"post": {
        "summary": "Write the proposal to the learned intents files and reload the intents",
        "parameters": [_id("proposal id")], "requestBody": _body(_BY),
        "responses": {"200": _json({"type": "object", "properties": {
            "proposal": _ref("Proposal"), "reloads": _INT}}, "written and reloaded"),
            **_errors(400, 404, 409, 422, 503)}}},
    "/api/review/proposals/{id}/reject": {"post": {
        "summary": "Turn a proposal down", "parameters": [_id("proposal id")],
        "requestBody": _body(_BY),
        "responses": {"200": _json({"type": "object", "properties": {
            "proposal": _ref("Proposal")}}, "rejected"), **_errors(400, 404, 409)}}},
    "/api/review/{id}": {"get": {
        "summary": "One review item", "parameters": [_id("review item id")],
        "responses": {"200": _json(_ref("ReviewItem"), "the item"),
                      **_errors(400, 404, 409)}}},
    "/api/review/{id}/audio": {"get": {
        "summary": "The item's audio", "parameters": [_id("review item id")],
        "responses": {"200": {"description": "the audio file", "content": {
            "audio/flac": {"schema": {"type": "string", "format": "binary"}},
            "audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
            **_errors(400, 404, 409)}}},
    "/api/review/{id}/correction": {"post": {
        "summary": "Correct an item: what was said, the intent and slots (or not a "
                   "command), who spoke; it leaves the queue as training data",
        "parameters": [_id("review item id")],
        "requestBody": _body({
            "text": {"type": "string", "maxLength": 500, "description": "what was said"},
            "intent": {"type": "string", "nullable": True},
            "slots": {"type": "object", "additionalProperties": {
                "oneOf": [_STR, _NUM, _BOOL]}},
            "not_command": {"type": "boolean", "default": False},
            "speaker": {"type": "string", "nullable": True, "description": "who spoke"},
            "add_to_profile": {"type": "boolean", "default": False, "description":
                               "add the audio to the speaker's voice profile (it must be "
                               "identified as them, as in enrollment by voice)"},
            **_BY}, ["text"]),
        "responses": {"200": _json({"type": "object", "properties": {
            "item": _ref("ReviewItem"), "profile": _NSTR,
            "proposals": {"type": "array", "items": _ref("Proposal")}}},
            "stored; the proposals it supports"), **_errors(400, 404, 409)}}},
    "/api/review/{id}/discard": {"post": {
        "summary": "Discard an item (its audio is deleted)",
        "parameters": [_id("review item id")], "requestBody": _body(_BY),
        "responses": {"200": _json(_ref("ReviewItem"), "discarded"),
                      **_errors(400, 404, 409)}}},
}
