"""Speakers over HTTP: list, enroll, remove, identify (/api/speakers...).

Enrollment is `voiced speakers enroll`'s: the name is checked, every sample is quality
checked (too little speech, clipped, too quiet, noisy) and all or nothing is stored; a
person enrolled with another model needs `replace`; `force` stores failing samples as the
CLI's `--force` does. Identification never adapts a profile. All of it runs on the
inference engine against the daemon's own speaker service, which sees the change at once.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from voiced.enrollment import PROMPTS
from voiced.errors import SpeakerError
from voiced.http import params
from voiced.http.api_recognize import audio_files
from voiced.http.errors import ApiError
from voiced.http.keys import DAEMON
from voiced.speakers.enrollment import RECOMMENDED_SAMPLES, enroll
from voiced.speakers.quality import QualityReport
from voiced.speakers.store import check_name

ENROLL_FIELDS = frozenset({"name", "replace", "force"})


def _service(request: web.Request) -> tuple[Any, Any]:
    daemon = request.app[DAEMON]
    if daemon.speakers is None:
        raise ApiError(409, "speakers_off", "speaker identification is off (speakers.backend: "
                       "none in voiced.yaml); set it to resemblyzer or speechbrain")
    return daemon, daemon.speakers


async def speakers(request: web.Request) -> web.Response:
    """Everyone enrolled, with what the current model can use."""
    daemon, service = _service(request)
    people, threshold = await daemon.engine.run(
        lambda: (service.store.people(service.model_id), service.threshold()))
    return web.json_response({
        "model": service.model_id, "threshold": round(threshold, 4),
        "speakers": [{"name": p.name, "samples": p.enrolled, "adapted": p.adapted,
                      "needs_reenrollment": p.needs_reenrollment,
                      "other_models": list(p.other_models),
                      "enrolled_at": p.enrolled_at or None} for p in people],
        "prompts": list(PROMPTS), "recommended_samples": RECOMMENDED_SAMPLES})


async def add_speaker(request: web.Request) -> web.Response:
    """Enroll a person from uploaded recordings (multipart: name, files, replace, force)."""
    daemon, service = _service(request)
    files, values = await audio_files(request, ENROLL_FIELDS)
    name = params.name(values.get("name"), "name", required=True)
    replace = params.flag(values.get("replace"), "replace", False)
    force = params.flag(values.get("force"), "force", False)
    assert name is not None
    try:
        check_name(name)
        result = await daemon.engine.run(
            lambda: enroll(service.embedder, service.store, name, [p for _, p in files],
                           sources=[f"http:{n}" for n, _ in files], replace=replace,
                           force=force))
    except SpeakerError as exc:
        if exc.code == "bad_name":
            raise ApiError(400, exc.code, exc.message, field="name") from None
        if exc.code == "model_changed":
            raise ApiError(409, exc.code, exc.message + " (send replace=true to replace "
                           "the stored samples)", field="replace") from None
        raise ApiError(422, exc.code, exc.message) from None
    samples = [report_json(n, r) for (n, _), r in zip(files, result.reports, strict=True)]
    body: dict[str, Any] = {"name": name, "stored": result.stored, "total": result.total,
                            "model": service.model_id, "samples": samples}
    if not result.ok:
        bad = ", ".join(n for (n, _), r in zip(files, result.reports, strict=True) if not r.ok)
        body["error"] = {"code": "quality_check_failed",
                         "message": f"nothing stored for {name}: these recordings failed the "
                                    f"quality check: {bad} (see samples; force=true stores "
                                    "them anyway)", "field": "file"}
        return web.json_response(body, status=422)
    body["warning"] = (f"{name} has {result.total} sample(s); {RECOMMENDED_SAMPLES} or more "
                       "make identification more reliable"
                       if result.total < RECOMMENDED_SAMPLES else None)
    return web.json_response(body, status=201)


def report_json(file: str, report: QualityReport) -> dict[str, Any]:
    """One sample's quality verdict."""
    return {"file": file, "ok": report.ok, "verdict": report.describe(),
            "duration_ms": round(report.duration_ms, 1), "speech_ms": round(report.speech_ms, 1),
            "speech_dbfs": _finite(report.speech_dbfs), "snr_db": _finite(report.snr_db),
            "clipped": round(report.clipped, 6),
            "problems": [{"code": p.code, "message": p.message} for p in report.problems]}


def _finite(value: float | None) -> float | None:
    return round(value, 2) if value is not None and math.isfinite(value) else None


async def remove_speaker(request: web.Request) -> web.Response:
    """Forget a person (every sample, every model)."""
    daemon, service = _service(request)
    name = params.name(request.match_info["name"], "name", required=True)
    removed = await daemon.engine.run(service.store.remove, name)
    if not removed:
        raise ApiError(404, "not_found", f"{name!r} is not enrolled", field="name")
    return web.json_response({"name": name, "vectors": removed})


async def identify(request: web.Request) -> web.Response:
    """Who speaks in each uploaded file (never adapts a profile)."""
    daemon, service = _service(request)
    files, _ = await audio_files(request, frozenset())
    matches = await daemon.engine.run(service.identify_batch, [p for _, p in files], False)
    return web.json_response({"model": service.model_id, "results": [
        {"file": n, "speaker": m.name, "confidence": round(m.confidence, 4),
         "scores": {k: round(v, 4) for k, v in m.scores.items()}}
        for (n, _), m in zip(files, matches, strict=True)]})


def setup(app: web.Application) -> None:
    """Register the speaker routes."""
    app.router.add_get("/api/speakers", speakers)
    app.router.add_post("/api/speakers", add_speaker)
    app.router.add_post("/api/speakers/identify", identify)
    app.router.add_delete("/api/speakers/{name}", remove_speaker)
