"""The OpenAPI 3 description of voiced's HTTP API, as data (served at /api/openapi.json).

Keep it true: tests/http/test_api.py checks that every route registered under /api/ is
here with its method, and that every path here is registered.
"""

from __future__ import annotations

from typing import Any

from voiced.http import openapi_review
from voiced.models import Outcome


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "bad input (the error names the field and what was expected)",
            401: "a token is needed (off loopback)", 404: "not found",
            409: "turned off in voiced.yaml", 413: "over a size limit (the error gives it)",
            415: "wrong Content-Type", 422: "refused (the error says why)",
            503: "not ready, or overloaded"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


_STR = {"type": "string"}
_NUM = {"type": "number"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_NSTR = {"type": "string", "nullable": True}
_NNUM = {"type": "number", "nullable": True}
_OBJ = {"type": "object", "additionalProperties": True}

AUDIO_BODY: dict[str, Any] = {
    "description": "Audio: multipart/form-data with files (WAV, FLAC, OGG, MP3; other form "
                   "fields are parameters), or one file as the body with its type, or raw "
                   "16-bit PCM as audio/L16;rate=16000[;channels=1][;endian=little] "
                   "(big-endian by default, as RFC 3551 defines L16).",
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        **{t: {"schema": {"type": "string", "format": "binary"}}
           for t in ("audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "audio/L16",
                     "application/octet-stream")},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": _STR, "message": _STR, "field": _STR,
            "limit_bytes": _INT, "limit_s": _NUM}}}},
    "Transcription": {"type": "object", "properties": {
        "file": _STR, "text": _STR, "confidence": _NUM, "language": _STR, "is_speech": _BOOL,
        "intent": _NSTR, "slots": _OBJ,
        "timings": {"type": "object", "properties": {"asr_ms": _NUM, "nlu_ms": _NUM}}}},
    "Transcript": {"type": "object", "properties": {
        "text": _STR, "confidence": _NUM, "language": _STR, "is_speech": _BOOL}},
    "Speaker": {"type": "object", "nullable": True, "properties": {
        "name": _STR, "confidence": _NUM,
        "claimed": {"type": "boolean", "description": "given by the caller (text entry), "
                                                      "not identified by voice"}}},
    "IntentRun": {"type": "object", "properties": {
        "site": _STR, "session_id": _NSTR, "handle": _BOOL, "transcript": _ref("Transcript"),
        "speaker": _ref("Speaker"), "intent": _NSTR, "slots": _OBJ,
        "intent_confidence": _NNUM, "matched_by": _NSTR, "refused_intent": _NSTR,
        "reason": {"type": "string", "nullable": True, "description":
                   "why no intent: not_speech, empty, low_confidence, no_match, refused"},
        "outcome": {"type": "string", "nullable": True, "description":
                    "handled, not_recognized, not_speech, no_handler, refused, error, "
                    "timeout, enrolling, enrolled (null when handle=false)"},
        "detail": _NSTR,
        "handler": {"type": "object", "nullable": True, "properties": {
            "plugin": _NSTR, "outcome": _STR, "code": _NSTR, "error": _NSTR,
            "answer": _NSTR, "duration_ms": _NUM}},
        "termination": _NSTR,
        "timings": {"type": "object", "additionalProperties": _NUM,
                    "description": "stage -> ms (vad, asr, speaker, nlu, handler, processing)"}}},
    "HistoryItem": {"type": "object", "properties": {
        "id": _INT, "site": _STR, "session_id": _STR, "started_at": _NUM, "ended_at": _NUM,
        "text": _STR, "confidence": _NUM, "language": _STR, "intent": _NSTR, "slots": _OBJ,
        "speaker": _NSTR, "speaker_confidence": _NNUM,
        "outcome": {"type": "string", "enum": [o.value for o in Outcome], "description":
                    "what became of it; arbitration_lost: another satellite of the room "
                    "group answered (detail: the decision)"}, "detail": _NSTR,
        "timings": {"type": "object", "additionalProperties": _NUM}, "end_reason": _STR,
        "audio": {"type": "string", "nullable": True, "description": "URL of the kept audio"},
        "audio_bytes": {"type": "integer", "nullable": True}}},
    "Satellite": {"type": "object", "properties": {
        "site": _STR, "live": _BOOL, "connected": _BOOL, "mode": _STR, "area": _NSTR,
        "frames": _INT, "dropped": _INT, "shed": _INT, "too_fast": _INT, "queued": _INT,
        "last_heard": _NNUM, "last_heard_s": _NNUM, "level_dbfs": _NNUM,
        "realtime": _NUM, "behind": _BOOL, "crashes": _INT}},
    "SampleReport": {"type": "object", "properties": {
        "file": _STR, "ok": _BOOL, "verdict": _STR, "duration_ms": _NUM, "speech_ms": _NUM,
        "speech_dbfs": _NNUM, "snr_db": _NNUM, "clipped": _NUM,
        "problems": {"type": "array", "items": {"type": "object", "properties": {
            "code": _STR, "message": _STR}}}}},
    "Enrollment": {"type": "object", "properties": {
        "name": _STR, "stored": _INT, "total": _INT, "model": _STR,
        "samples": {"type": "array", "items": _ref("SampleReport")}, "warning": _NSTR,
        "error": {"type": "object", "description": "present when refused (422)"}}},
}


def spec(version: str) -> dict[str, Any]:
    """The whole OpenAPI document."""
    site_q = _query("site", "satellite the audio or text is treated as coming from "
                            "(default: default)")
    handle_q = _query("handle", "run the handlers (true, default) or only recognize",
                      {"type": "boolean"})
    paths: dict[str, Any] = {
        "/api/status": {"get": {
            "summary": "Counters, models, intents, handlers, plugins and every satellite",
            "responses": {"200": _json({"type": "object", "properties": {
                "state": _STR, "version": _STR, "uptime_s": _NUM, "models": _OBJ,
                "intents": _OBJ, "handlers": {"type": "array", "items": _OBJ},
                "plugins": {"type": "array", "items": _OBJ},
                "satellites": {"type": "array", "items": _ref("Satellite")},
                "arbitration": {"type": "object", "description": "room groups (README "
                                "Arbitration): policy, window_ms, score_ms, groups (group -> "
                                "sites), decisions, by_reason (scored, deadline, first, "
                                "conversation, late, swap -> count), swaps, lost (losers "
                                "ended quietly), parked, kept, rounds"}}}, "status")}}},
        "/api/reload": {"post": {
            "summary": "Reload intents, handlers and the ASR grammar (as SIGHUP)",
            "responses": {"200": _json({"type": "object", "properties": {
                "reloaded": _BOOL, "reloads": _INT, "intents": _INT, "handlers": _INT}},
                "reloaded"), **_errors(422, 503)}}},
        "/api/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": _json(_OBJ, "OpenAPI 3")}}},
        "/api/transcribe": {"post": {
            "summary": "Transcribe audio files (and match intents), as `voiced transcribe`",
            "description": "Nothing acts and nothing is recorded.",
            "parameters": [_query("intents", "match intents (true, default) or text only; "
                                  "false leaves out intent and slots", {"type": "boolean"}),
                           site_q],
            "requestBody": AUDIO_BODY,
            "responses": {"200": _json({"type": "object", "properties": {"results": {
                "type": "array", "items": _ref("Transcription")}}}, "one result per file"),
                **_errors(400, 413, 415, 503)}}},
        "/api/text-to-intent": {"post": {
            "summary": "Text through intents and (handle=true) the handlers",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["text"], "additionalProperties": False,
                "properties": {
                    "text": {"type": "string", "maxLength": 2000}, "site": _STR,
                    "speaker": {"type": "string", "description": "a claimed speaker name "
                                "(a claim, not a voice identification)"},
                    "language": _STR, "handle": {"type": "boolean", "default": True}}}}}},
            "responses": {"200": _json(_ref("IntentRun"), "what became of it"),
                          **_errors(400, 415, 503)}}},
        "/api/speech-to-intent": {"post": {
            "summary": "One recording through the pipeline (ASR, speaker, intents, handlers)",
            "description": "The same events, handlers and history row as a satellite's "
                           "command. Parameters in the query string or as form fields.",
            "parameters": [site_q, handle_q], "requestBody": AUDIO_BODY,
            "responses": {"200": _json(_ref("IntentRun"), "what became of it"),
                          **_errors(400, 413, 415, 503)}}},
        "/api/history": {"get": {
            "summary": "Utterances, newest first, filtered and paged",
            "parameters": [
                _query("site", "only this satellite"), _query("intent", "only this intent"),
                _query("outcome", f"{', '.join(o.value for o in Outcome)} (arbitration_lost: "
                                  "another satellite of the room group answered)"),
                _query("speaker", "only this speaker"),
                _query("q", "text contains this (case-insensitive)"),
                _query("since", "epoch seconds or ISO 8601 (inclusive)"),
                _query("until", "epoch seconds or ISO 8601 (exclusive)"),
                _query("limit", "page size, 1-500 (default 50)", _INT),
                _query("offset", "rows to skip (default 0)", _INT)],
            "responses": {"200": _json({"type": "object", "properties": {
                "items": {"type": "array", "items": _ref("HistoryItem")}, "total": _INT,
                "limit": _INT, "offset": _INT}}, "a page"), **_errors(400, 409)}}},
        "/api/history/{id}": {"get": {
            "summary": "One utterance", "parameters": [_path("id", "row id", _INT)],
            "responses": {"200": _json(_ref("HistoryItem"), "the utterance"),
                          **_errors(400, 404, 409)}}},
        "/api/history/{id}/audio": {"get": {
            "summary": "The utterance's kept audio (history.keep_audio)",
            "parameters": [_path("id", "row id", _INT)],
            "responses": {"200": {"description": "the audio file", "content": {
                "audio/flac": {"schema": {"type": "string", "format": "binary"}},
                "audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors(400, 404, 409)}}},
        "/api/speakers": {
            "get": {"summary": "Enrolled people, the model, the threshold and the prompts",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "model": _STR, "threshold": _NUM, "recommended_samples": _INT,
                        "prompts": {"type": "array", "items": _STR},
                        "speakers": {"type": "array", "items": {"type": "object",
                                     "properties": {"name": _STR, "samples": _INT,
                                                    "adapted": _INT,
                                                    "needs_reenrollment": _BOOL,
                                                    "other_models": {"type": "array",
                                                                     "items": _STR},
                                                    "enrolled_at": _NNUM}}}}},
                        "people"), **_errors(409)}},
            "post": {"summary": "Enroll a person from recordings (quality checked, all or "
                                "nothing)",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {
                         "schema": {"type": "object", "required": ["name"], "properties": {
                             "name": _STR, "replace": _BOOL, "force": _BOOL,
                             "file": {"type": "array", "items": {"type": "string",
                                                                 "format": "binary"}}}}}}},
                     "responses": {"201": _json(_ref("Enrollment"), "stored"),
                                   "422": _json(_ref("Enrollment"),
                                                "refused: a sample failed the quality check"),
                                   **_errors(400, 409, 413, 415)}}},
        "/api/speakers/{name}": {"delete": {
            "summary": "Forget a person", "parameters": [_path("name", "the person")],
            "responses": {"200": _json({"type": "object", "properties": {
                "name": _STR, "vectors": {"type": "integer", "description":
                                          "stored vectors deleted (samples, probes, adapted)"}}},
                "removed"), **_errors(404, 409)}}},
        "/api/speakers/identify": {"post": {
            "summary": "Who speaks in each file (never adapts a profile)",
            "requestBody": AUDIO_BODY,
            "responses": {"200": _json({"type": "object", "properties": {
                "model": _STR, "results": {"type": "array", "items": {
                    "type": "object", "properties": {
                        "file": _STR, "speaker": _STR, "confidence": _NUM,
                        "scores": {"type": "object", "additionalProperties": _NUM}}}}}},
                "one result per file"), **_errors(400, 409, 413, 415)}}},
        "/api/events": {"get": {
            "summary": "Websocket: every pipeline event of every satellite, as JSON messages "
                       "{type, site, sessionId, time, data, timings}; first a 'hello' with "
                       "the sites and status; a 'dropped' notice when this client fell "
                       "behind (see the README, Live events)",
            "parameters": [
                {"name": "site", "in": "query", "required": False, "explode": True,
                 "schema": {"type": "array", "items": {"type": "string"}},
                 "description": "only these sites (repeatable)"},
                {"name": "type", "in": "query", "required": False, "explode": True,
                 "schema": {"type": "array", "items": {"type": "string"}},
                 "description": "only these event types (repeatable), e.g. intent, partial"},
                {"name": "levels", "in": "query", "required": False,
                 "schema": {"type": "boolean"},
                 "description": "also 'level' messages: each site's audio level in dBFS, "
                                "4 a second"}],
            "responses": {"101": {"description": "switching to the websocket"},
                          "400": {"description": "a filter is invalid"},
                          "503": {"description": "too many websockets"}}}},
        "/api/stream": {"get": {
            "summary": "Websocket: this client is a satellite. Send a JSON hello {site, "
                       "rate (default 16000), format (s16le|f32le), mode (always|wake)}, "
                       "then binary PCM messages (at most 2 s each) and optionally "
                       "{type: listen|stop}; the site's events come back as on /api/events, "
                       "mistakes as {type: stream_error, code, message} (see the README)",
            "responses": {"101": {"description": "switching to the websocket"},
                          "503": {"description": "too many websockets"}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "voiced", "version": version,
                 "description": "voiced's HTTP API. On loopback no token is needed; on any "
                                "other address send 'Authorization: Bearer <token>' or log in "
                                "at /login (session cookie)."},
        "paths": {**paths, **openapi_review.PATHS},
        "components": {"schemas": {**SCHEMAS, **openapi_review.SCHEMAS}, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "voiced_session"}}},
        "security": [{"bearer": []}, {"cookie": []}, {}],
    }
