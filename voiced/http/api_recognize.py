"""Recognition over HTTP: POST /api/transcribe, /api/text-to-intent, /api/speech-to-intent.

`transcribe` gives what `voiced transcribe` prints for each file (its fields, its rules),
run by the daemon's own recognizer: nothing acts and nothing is recorded. The two
`-to-intent` endpoints run the real pipeline when `handle` is true (the default): the
same events, handlers, answers and history row as a satellite's command; with
`handle=false` they only recognize. Model work runs on the inference engine.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from voiced.http import params
from voiced.http.errors import ApiError
from voiced.http.keys import DAEMON, UPLOAD_LIMIT
from voiced.http.uploads import Upload, decode, read_upload
from voiced.models import UNKNOWN_SPEAKER, IntentResult, SpeakerMatch, Transcript
from voiced.runs import RunResult

TRANSCRIBE_PARAMS = frozenset({"intents", "site"})
TEXT_FIELDS = frozenset({"text", "site", "speaker", "language", "handle"})
SPEECH_PARAMS = frozenset({"site", "handle"})
NOT_FOR_SPEECH = frozenset({"speaker", "language"})


def daemon_of(request: web.Request) -> Any:
    """The daemon, once it is serving (503 while it is still starting or stopping)."""
    daemon = request.app[DAEMON]
    if daemon.pipeline is None or daemon.asr is None:
        raise ApiError(503, "not_ready", "voiced is not ready yet; try again in a moment")
    return daemon


async def decoded(request: web.Request, upload: Upload) -> list[tuple[str, bytes]]:
    """(name, internal-format PCM) of every file, decoded on the inference engine."""
    daemon = request.app[DAEMON]
    max_s = daemon.config.http.max_audio_s
    return [(f.name, await daemon.engine.run(decode, f, max_s)) for f in upload.files]


async def audio_files(request: web.Request, allowed: frozenset[str], *, one: bool = False
                      ) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The request's decoded audio and its parameters (query string and form fields)."""
    upload = await read_upload(request, request.app[UPLOAD_LIMIT])
    values = params.merged(request.query, upload.fields, allowed)
    if not upload.files:
        raise ApiError(400, "audio_missing", "no audio in the request; send a file as "
                       "multipart/form-data or as the body with its audio Content-Type",
                       field="file")
    if one and len(upload.files) > 1:
        raise ApiError(400, "too_many_files", f"{len(upload.files)} files; this endpoint "
                       "takes one recording", field=upload.files[1].source)
    return await decoded(request, upload), values


class Admission:
    """Bounds the pipeline runs HTTP starts at once (`max_utterances_in_flight`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    def __enter__(self) -> None:
        if self.running >= self.limit:
            raise ApiError(503, "overloaded", f"{self.running} requests are already being "
                           "recognized (max_utterances_in_flight); try again shortly")
        self.running += 1

    def __exit__(self, *exc: object) -> None:
        self.running -= 1


ADMISSION: web.AppKey[Admission] = web.AppKey("admission", Admission)


# ---- POST /api/transcribe ----------------------------------------------------------------
async def transcribe(request: web.Request) -> web.Response:
    """Text (and intent) of each uploaded file, as `voiced transcribe` prints them."""
    daemon = daemon_of(request)
    files, values = await audio_files(request, TRANSCRIBE_PARAMS)
    with_intents = params.flag(values.get("intents"), "intents", True)
    site = params.site(values.get("site"))
    assert site is not None
    context: dict[str, Any] = {"site": site, "speaker": UNKNOWN_SPEAKER}
    area = daemon.config.sites.area_for(site)
    if area:
        context["area"] = area
    results = []
    with request.app[ADMISSION]:
        for name, pcm in files:
            results.append(await _transcribe_one(daemon, name, pcm, with_intents, context))
    return web.json_response({"results": results})


async def _transcribe_one(daemon: Any, name: str, pcm: bytes, with_intents: bool,
                          context: dict[str, Any]) -> dict[str, Any]:
    """One line of `voiced transcribe` (`transcribe_pcm`'s fields and rules), through the
    daemon's ASR service (batched with the satellites' utterances) and intent catalog."""
    started = time.perf_counter()
    transcript: Transcript = await daemon.asr.transcribe(pcm, None)
    asr_ms = (time.perf_counter() - started) * 1000
    out: dict[str, Any] = {"file": name, **transcript_json(transcript)}
    nlu_ms = 0.0
    if with_intents:
        out.update(intent=None, slots={})
        if transcript.is_speech and transcript.confidence >= daemon.config.asr.min_confidence:
            started = time.perf_counter()
            result = await daemon.pipeline.recognize(
                transcript.text, {"language": transcript.language, **context})
            nlu_ms = (time.perf_counter() - started) * 1000
            out.update(intent=result.name, slots=result.slot_values())
    out["timings"] = {"asr_ms": round(asr_ms, 1), "nlu_ms": round(nlu_ms, 1)}
    return out


def transcript_json(transcript: Transcript) -> dict[str, Any]:
    """The transcript fields every recognition result carries."""
    return {"text": transcript.text, "confidence": round(transcript.confidence, 4),
            "language": transcript.language, "is_speech": transcript.is_speech}


# ---- POST /api/text-to-intent --------------------------------------------------------------
async def text_to_intent(request: web.Request) -> web.Response:
    """Text entering after ASR: recognized, and handled unless `handle` is false."""
    daemon = daemon_of(request)
    body = await params.json_object(request, TEXT_FIELDS)
    text = params.text(body.get("text"), "text", required=True)
    site = params.site(body.get("site"))
    speaker = params.name(body.get("speaker"), "speaker")
    language = params.language(body.get("language"))
    handle = params.flag(body.get("handle"), "handle", True)
    assert text is not None and site is not None
    with request.app[ADMISSION]:
        if handle:
            sid = str(uuid.uuid4())
            run = await daemon.pipeline.handle_text(text, site=site, speaker=speaker,
                                                    language=language, session_id=sid)
            return web.json_response(run_json(run, site, sid,
                                              speakers_on=daemon.speakers is not None))
        transcript = Transcript(text, 1.0, language or daemon.config.intents.language)
        # a name given with text is a claim, never a voice identification
        match = (SpeakerMatch(speaker, 0.0, verified=False)
                 if speaker and speaker != UNKNOWN_SPEAKER else None)
        return web.json_response(await _recognize_only(daemon, site, transcript, match))


# ---- POST /api/speech-to-intent ------------------------------------------------------------
async def speech_to_intent(request: web.Request) -> web.Response:
    """One recording through the pipeline: handled unless `handle` is false."""
    daemon = daemon_of(request)
    files, values = await audio_files(request, SPEECH_PARAMS | NOT_FOR_SPEECH, one=True)
    for refused in sorted(NOT_FOR_SPEECH & values.keys()):
        raise ApiError(400, "field_unknown", f"{refused}: speech-to-intent takes who spoke "
                       "and the language from the audio (text-to-intent accepts them)",
                       field=refused)
    site = params.site(values.get("site"))
    handle = params.flag(values.get("handle"), "handle", True)
    assert site is not None
    _, pcm = files[0]
    with request.app[ADMISSION]:
        if handle:
            sid = str(uuid.uuid4())
            run = await daemon.pipeline.handle_audio(pcm, site=site, session_id=sid)
            return web.json_response(run_json(run, site, sid,
                                              speakers_on=daemon.speakers is not None))
        transcript = await daemon.asr.transcribe(pcm, None)
        match = await daemon.speakers.verify(pcm) if daemon.speakers is not None else None
        return web.json_response(await _recognize_only(daemon, site, transcript, match))


async def _recognize_only(daemon: Any, site: str, transcript: Transcript,
                          speaker: SpeakerMatch | None) -> dict[str, Any]:
    """handle=false: the intent the pipeline would match, by its rules; nothing acts."""
    started = time.perf_counter()
    result = IntentResult(transcript.text, None)
    min_confidence = daemon.config.asr.min_confidence
    text = transcript.text
    reason = ("not_speech" if not transcript.is_speech else "empty" if not text.strip()
              else "low_confidence" if transcript.confidence < min_confidence else None)
    if reason is None:
        context: dict[str, Any] = {"site": site, "language": transcript.language,
                                   "speaker": speaker.name if speaker else UNKNOWN_SPEAKER}
        area = daemon.config.sites.area_for(site)
        if area:
            context["area"] = area
        result = await daemon.pipeline.recognize(text, context)
        reason = ("refused" if result.refused_intent is not None
                  else None if result.recognized else "no_match")
    nlu_ms = (time.perf_counter() - started) * 1000
    return {"site": site, "session_id": None, "handle": False,
            "transcript": transcript_json(transcript),
            "speaker": speaker_json(speaker), **intent_json(result),
            "reason": reason, "outcome": None, "detail": None, "handler": None,
            "termination": None, "timings": {"nlu": round(nlu_ms, 2)}}


def run_json(run: RunResult, site: str, session_id: str, speakers_on: bool
             ) -> dict[str, Any]:
    """A pipeline run's result (text-to-intent, speech-to-intent)."""
    handled = run.handled
    handler = None
    if handled is not None:
        handler = {"plugin": handled.plugin, "outcome": str(handled.outcome),
                   "code": handled.code, "error": handled.error,
                   "answer": handled.response.text if handled.response else None,
                   "duration_ms": round(handled.duration_ms, 2)}
    outcome = str(run.outcome)
    reason = (run.detail if outcome in ("not_recognized", "not_speech")
              else "refused" if outcome == "refused" else None)
    speaker = run.speaker if speakers_on or not run.speaker.verified else None
    return {"site": site, "session_id": session_id, "handle": True,
            "transcript": transcript_json(run.transcript),
            "speaker": speaker_json(speaker), **intent_json(run.intent),
            "reason": reason, "outcome": outcome, "detail": run.detail, "handler": handler,
            "termination": str(run.termination) if run.termination else None,
            "timings": {k: round(v, 2) for k, v in run.timings.items()}}


def intent_json(result: IntentResult) -> dict[str, Any]:
    """The intent fields of a recognition result."""
    return {"intent": result.name, "slots": result.slot_values(),
            "intent_confidence": round(result.confidence, 4) if result.recognized else None,
            "matched_by": result.matched_by if result.recognized else None,
            "refused_intent": result.refused_intent}


def speaker_json(match: SpeakerMatch | None) -> dict[str, Any] | None:
    """Who spoke: identified by voice, or only claimed by the caller (text entry)."""
    if match is None:
        return None
    return {"name": match.name, "confidence": round(match.confidence, 4),
            "claimed": not match.verified}


def setup(app: web.Application) -> None:
    """Register the recognition routes."""
    app[ADMISSION] = Admission(app[DAEMON].config.max_utterances_in_flight)
    app.router.add_post("/api/transcribe", transcribe)
    app.router.add_post("/api/text-to-intent", text_to_intent)
    app.router.add_post("/api/speech-to-intent", speech_to_intent)
