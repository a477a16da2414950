"""The review queue over HTTP (/api/review...): list, play, correct, discard, mark wrong,
and the proposals corrections make (accept: written to the learned files, then reloaded).

Everything runs against the daemon's own `voiced.review.ReviewQueue` on the inference
engine's threads (SQLite is blocking). Who corrected is the name the client gives (`by`,
the page remembers it) with how the request came (`via`: address and authorization);
voiced has one API token, not accounts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from voiced.http import params
from voiced.http.api_history import AUDIO_TYPES, record_json
from voiced.http.errors import ApiError
from voiced.http.keys import AUTH, DAEMON
from voiced.review import (
    Correction,
    ReviewError,
    ReviewQueue,
    accept,
    add_to_profile,
    read_kept_audio,
)
from voiced.review_store import STATUSES, Proposal, ReviewItem

LIST_QUERY = frozenset({"status", "limit", "offset"})
MARK_FIELDS = frozenset({"utterance", "by"})
CORRECTION_FIELDS = frozenset({"text", "intent", "slots", "not_command", "speaker",
                               "add_to_profile", "by"})
BY_FIELDS = frozenset({"by"})
_STATUS = {"not_found": 404, "no_audio": 409, "discarded": 409, "already_decided": 409,
           "reload_failed": 422, "learned_invalid": 422}


def _daemon(request: web.Request) -> tuple[Any, ReviewQueue]:
    daemon = request.app[DAEMON]
    if daemon.review is None:
        raise ApiError(409, "review_off", "the review queue is off: it needs kept audio "
                       "(history.keep_audio: true) and review.enabled in voiced.yaml")
    return daemon, daemon.review


def _api_error(exc: ReviewError) -> ApiError:
    return ApiError(_STATUS.get(exc.code, 400), exc.code, exc.message, field=exc.field)


def _id(request: web.Request) -> int:
    return params.integer(request.match_info["id"], "id", 0, 1, 2**63 - 1)


def _via(request: web.Request) -> str:
    how = "token" if request.app[AUTH].required else "loopback"
    return f"http {request.remote or '?'} ({how})"


def _by(value: Any) -> str:
    return params.name(value, "by") or "someone"


def item_json(item: ReviewItem) -> dict[str, Any]:
    """One queue item as the API shows it."""
    correction = None
    if item.status == "corrected":
        correction = {"text": item.text, "intent": item.intent, "slots": dict(item.slots),
                      "not_command": item.not_command, "speaker": item.speaker,
                      "profile": item.profile}
    return {"id": item.id, "status": item.status, "reason": item.reason,
            "queued_at": item.queued_at, "utterance": record_json(item.utterance),
            "audio": f"/api/review/{item.id}/audio" if item.audio_path else None,
            "audio_bytes": item.audio_bytes, "correction": correction,
            "decided_by": item.corrected_by, "decided_via": item.corrected_via,
            "decided_at": item.corrected_at}


def proposal_json(proposal: Proposal) -> dict[str, Any]:
    """One proposal as the API shows it."""
    return {"id": proposal.id, "kind": proposal.kind, "language": proposal.language,
            "intent": proposal.intent, **{k: v for k, v in proposal.body.items()},
            "support": proposal.support, "items": list(proposal.items),
            "status": proposal.status, "decided_by": proposal.decided_by,
            "decided_at": proposal.decided_at}


async def queue(request: web.Request) -> web.Response:
    """Items in one status (pending by default), newest first, with every status's count."""
    daemon, review = _daemon(request)
    q = params.merged(request.query, {}, LIST_QUERY)
    status = params.text(q.get("status"), "status", max_len=16) or "pending"
    if status not in (*STATUSES, "all"):
        raise params.invalid("status", f"expected one of {', '.join(STATUSES)} or all")
    limit = params.integer(q.get("limit"), "limit", 50, 1, 500)
    offset = params.integer(q.get("offset"), "offset", 0, 0, 2**31)
    items, total = await daemon.engine.run(
        review.store.items, None if status == "all" else status, limit, offset)
    counts = await daemon.engine.run(review.store.counts)
    return web.json_response({"items": [item_json(i) for i in items], "total": total,
                              "counts": counts, "limit": limit, "offset": offset})


async def mark(request: web.Request) -> web.Response:
    """Queue a history row a person says was wrong (the history's button)."""
    daemon, review = _daemon(request)
    body = await params.json_object(request, MARK_FIELDS)
    if body.get("utterance") is None:
        raise ApiError(400, "field_missing", "utterance is required (a history id)",
                       field="utterance")
    utterance = params.integer(body.get("utterance"), "utterance", 0, 1, 2**63 - 1)
    _by(body.get("by"))
    try:
        found, created = await daemon.engine.run(review.mark_wrong, utterance)
    except ReviewError as exc:
        raise _api_error(exc) from None
    return web.json_response(item_json(found), status=201 if created else 200)


async def intents(request: web.Request) -> web.Response:
    """The intents and their slots, for picking what an utterance meant."""
    daemon, _ = _daemon(request)
    recognizer = daemon.recognizer
    names = recognizer.intent_names() if recognizer else []
    return web.json_response({"language": recognizer.language if recognizer else None,
                              "intents": [{"name": n, "slots": sorted(recognizer.slot_names(n))}
                                          for n in names]})


async def item(request: web.Request) -> web.Response:
    """One item."""
    daemon, review = _daemon(request)
    try:
        found = await daemon.engine.run(review.item, _id(request))
    except ReviewError as exc:
        raise _api_error(exc) from None
    return web.json_response(item_json(found))


async def audio(request: web.Request) -> web.StreamResponse:
    """The item's audio (the queue's copy)."""
    daemon, review = _daemon(request)
    try:
        found = await daemon.engine.run(review.item, _id(request))
    except ReviewError as exc:
        raise _api_error(exc) from None
    path = review.audio_file(found)
    if path is None:
        raise ApiError(404, "no_audio", f"review item {found.id} has no audio (discarded)",
                       field="id")
    return web.FileResponse(path, headers={
        "Content-Type": AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        "Cache-Control": "private, max-age=3600"})


async def correct(request: web.Request) -> web.Response:
    """Store a correction; answers the item, the proposals it supports and what became of
    the voice profile."""
    daemon, review = _daemon(request)
    item_id = _id(request)
    body = await params.json_object(request, CORRECTION_FIELDS)
    slots = body.get("slots") or {}
    if not isinstance(slots, dict):
        raise params.invalid("slots", "expected an object of slot name to value")
    text = params.text(body.get("text"), "text", required=True, max_len=500)
    assert text is not None
    correction = Correction(
        text=text, intent=params.text(body.get("intent"), "intent", max_len=200),
        slots={params.text(k, "slots", max_len=64) or "": v for k, v in slots.items()},
        not_command=params.flag(body.get("not_command"), "not_command", False),
        speaker=params.name(body.get("speaker"), "speaker"),
        add_to_profile=params.flag(body.get("add_to_profile"), "add_to_profile", False),
        by=_by(body.get("by")), via=_via(request))
    recognizer = daemon.recognizer
    try:
        corrected, proposals = await daemon.engine.run(review.correct, item_id, correction,
                                                       recognizer)
    except ReviewError as exc:
        raise _api_error(exc) from None
    profile = None
    if correction.add_to_profile:
        profile = await add_to_profile(review, corrected, daemon.speakers, read_kept_audio,
                                       daemon.engine.run)
        corrected = await daemon.engine.run(review.item, item_id)
    return web.json_response({"item": item_json(corrected), "profile": profile,
                              "proposals": [proposal_json(p) for p in proposals]})


async def discard(request: web.Request) -> web.Response:
    """Drop an item (and its audio)."""
    daemon, review = _daemon(request)
    item_id = _id(request)
    body = await _optional_body(request)
    try:
        found = await daemon.engine.run(review.discard, item_id, _by(body.get("by")),
                                        _via(request))
    except ReviewError as exc:
        raise _api_error(exc) from None
    return web.json_response(item_json(found))


async def _optional_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    return await params.json_object(request, BY_FIELDS)


async def proposals(request: web.Request) -> web.Response:
    """What corrections teach: offered (pending) proposals by default."""
    daemon, review = _daemon(request)
    q = params.merged(request.query, {}, frozenset({"status"}))
    status = params.text(q.get("status"), "status", max_len=16) or "pending"
    allowed = ("watching", "pending", "accepted", "rejected", "all")
    if status not in allowed:
        raise params.invalid("status", f"expected one of {', '.join(allowed)}")
    found = await daemon.engine.run(review.store.proposals, None if status == "all" else status)
    return web.json_response({"proposals": [proposal_json(p) for p in found]})


async def accept_proposal(request: web.Request) -> web.Response:
    """Write the proposal to the learned files and reload the intents."""
    daemon, review = _daemon(request)
    proposal_id = _id(request)
    body = await _optional_body(request)
    if daemon.pipeline is None:
        raise ApiError(503, "not_ready", "voiced is not ready yet; try again in a moment")
    try:
        done = await accept(review, proposal_id, _by(body.get("by")), daemon.reload,
                            daemon.engine.run)
    except ReviewError as exc:
        raise _api_error(exc) from None
    return web.json_response({"proposal": proposal_json(done), "reloads": daemon.reloads})


async def reject_proposal(request: web.Request) -> web.Response:
    """Turn a proposal down (it is not offered again)."""
    daemon, review = _daemon(request)
    proposal_id = _id(request)
    body = await _optional_body(request)
    found = await daemon.engine.run(review.store.proposal, proposal_id)
    if found is None:
        raise ApiError(404, "not_found", f"no proposal {proposal_id}", field="id")
    if found.status in ("accepted", "rejected"):
        raise ApiError(409, "already_decided", f"proposal {proposal_id} is {found.status}",
                       field="id")
    await daemon.engine.run(review.store.decide, proposal_id, "rejected", _by(body.get("by")))
    done = await daemon.engine.run(review.store.proposal, proposal_id)
    return web.json_response({"proposal": proposal_json(done)})


def setup(app: web.Application) -> None:
    """Register the review routes (fixed paths before /api/review/{id})."""
    app.router.add_get("/api/review", queue)
    app.router.add_post("/api/review", mark)
    app.router.add_get("/api/review/intents", intents)
    app.router.add_get("/api/review/proposals", proposals)
    app.router.add_post("/api/review/proposals/{id}/accept", accept_proposal)
    app.router.add_post("/api/review/proposals/{id}/reject", reject_proposal)
    app.router.add_get("/api/review/{id}", item)
    app.router.add_get("/api/review/{id}/audio", audio)
    app.router.add_post("/api/review/{id}/correction", correct)
    app.router.add_post("/api/review/{id}/discard", discard)
