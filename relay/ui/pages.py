"""The dashboard's pages and the posts of their buttons (CONTRACT §10). Each reads through the store, the
Registry and the services the API uses (``relay.actions``, ``relay.webhooks``), inside the session's scope: a
tenant's session never reads or changes another tenant's webhook, event or delivery, and finds "not found" where
one is."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web

from relay import actions
from relay.config import format_duration
from relay.errors import Conflict, NotFound, ValidationError
from relay.models import EVENT_TOKEN, DeliveryStatus, Webhook, parse_datetime
from relay.store import Page
from relay.ui.format import hourly_chart
from relay.ui.view import Done, Rendered, View, redirect
from relay.views import webhook_view
from relay.webhook_specs import DEFAULT_OVERLAP

HOUR = 3600.0
PAGE = 25  # deliveries or events on one page
FAILING_MOST = 5


def _last_day(view: View) -> float:
    """Where "the last 24 h" starts: the chart's 24 bars are the current hour and the 23 before it."""
    return (view.now // HOUR - 23) * HOUR


async def overview(view: View) -> Rendered:
    """Deliveries by status, attempts and failures hour by hour over 24 h, the webhooks failing most."""
    services, scope = view.services, view.scope
    # Every status but succeeded is counted from its index; succeeded ones (the bulk: counting them visits every
    # delivery, 1.9 s at a million on SQLite) are those of the last 24 h, from the hourly counts.
    totals = {status.value: 0 for status in DeliveryStatus if status is not DeliveryStatus.SUCCEEDED}
    totals.update(await services.store.status_totals(scope=scope, succeeded=False))
    activity = await services.store.activity(_last_day(view), view.now, scope=scope)
    attempts = sum(h.attempts for h in activity.hours)
    failures = sum(h.failures for h in activity.hours)
    failing = sorted(
        ((webhook_id, a) for webhook_id, a in activity.webhooks.items() if a.failures > 0),
        key=lambda item: (-item[1].failures, item[0]),
    )[:FAILING_MOST]
    return Rendered(
        "overview.html",
        {
            "totals": totals,
            "succeeded": attempts - failures,
            "chart": hourly_chart(activity.hours),
            "attempts": attempts,
            "failures": failures,
            "failing": [
                {"id": webhook_id, "webhook": services.registry.find(webhook_id, scope), "activity": a}
                for webhook_id, a in failing
            ],
        },
    )


async def webhooks(view: View) -> Rendered:
    """Every webhook in scope, with its success rate over 24 h and its last attempt."""
    activity = await view.services.store.activity(_last_day(view), view.now, scope=view.scope)
    listed = sorted(view.services.registry.visible(view.scope), key=lambda w: (w.created_at or 0.0, w.id))
    return Rendered(
        "webhooks.html", {"webhooks": [{"webhook": w, "activity": activity.webhooks.get(w.id)} for w in listed]}
    )


async def webhook(view: View) -> Rendered:
    """One webhook: its settings (never a secret), its deliveries filterable by status, page by page, its buttons."""
    found = _webhook(view)
    query = view.request.query
    errors: dict[str, str] = {}
    status = query.get("status") or None
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        errors["status"] = "Pick one of the statuses listed."
        status = None
    after = query.get("after") or None

    async def listed(cursor: str | None) -> Page:
        return await view.services.store.list_deliveries(
            webhook_id=found.id, status=status, since=None, until=None, cursor=cursor, limit=PAGE, scope=view.scope
        )

    try:
        page = await listed(after)
    except ValidationError:
        errors["after"] = "That page is not one this list gave: showing the first."
        page = await listed(None)
    activity = await view.services.store.activity(_last_day(view), view.now, scope=view.scope)
    next_page = None
    if page.next_cursor is not None:
        next_page = "?" + urlencode({k: v for k, v in (("status", status), ("after", page.next_cursor)) if v})
    return Rendered(
        "webhook.html",
        {
            "webhook": found,
            "settings": webhook_view(found),
            "activity": activity.webhooks.get(found.id),
            "deliveries": page.deliveries,
            "statuses": [s.value for s in DeliveryStatus],
            "status": status,
            "errors": errors,
            "next_page": next_page,
            "first_page": "?" + urlencode({"status": status}) if status else "?",
            "paged": after is not None and "after" not in errors,
        },
        400 if errors else 200,
    )


async def event(view: View) -> Rendered:
    """One event: its payload pretty-printed, each of its deliveries and every attempt, the replay button."""
    event_id = view.request.match_info["event_id"]
    found = await view.services.store.get_event(event_id, scope=view.scope)
    if found is None:
        raise NotFound(f"No event with id {event_id!r}.")
    stored, deliveries = found
    try:
        payload = orjson.dumps(orjson.loads(stored.data), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        payload = stored.data.decode("utf-8", "replace")
    return Rendered(
        "event.html",
        {
            "event": stored,
            "payload": payload,
            "deliveries": [
                {"delivery": d, "webhook": view.services.registry.find(d.webhook_id, view.scope)} for d in deliveries
            ],
        },
    )


async def events(view: View) -> Rendered | web.Response:
    """The event search: by id (straight to the event), or by type and a time range of their ``created_at``."""
    query = view.request.query
    form = {name: query.get(name, "").strip() for name in ("id", "type", "since", "until")}
    errors: dict[str, str] = {}
    if form["id"]:
        found = await view.services.store.get_event(form["id"], scope=view.scope)
        if found is not None:
            return redirect(f"/ui/events/{_quote(found[0].id)}")
        errors["id"] = "No event has this id."
    if form["type"] and not EVENT_TOKEN.fullmatch(form["type"]):
        errors["type"] = "An event type is 1-128 characters of letters, digits and _ . : -"
    since, until = _moment(form, "since", errors), _moment(form, "until", errors)
    if since is not None and until is not None and until < since:
        errors["until"] = "The end must not be before the start."
    if errors:
        return Rendered("events.html", _search_context(form, errors, [], None), 400)
    after = query.get("after") or None
    try:
        page = await view.services.store.list_events(
            event_type=form["type"] or None, since=since, until=until, cursor=after, limit=PAGE, scope=view.scope
        )
    except ValidationError:
        errors["after"] = "That page is not one this list gave."
        return Rendered("events.html", _search_context(form, errors, [], None), 400)
    next_page = None
    if page.next_cursor is not None:
        next_page = "?" + urlencode({k: v for k, v in form.items() if v} | {"after": page.next_cursor})
    return Rendered("events.html", _search_context(form, errors, page.events, next_page))


def _search_context(
    form: dict[str, str], errors: dict[str, str], found: list[Any], next_page: str | None
) -> dict[str, Any]:
    return {"form": form, "errors": errors, "events": found, "next_page": next_page}


def _moment(form: dict[str, str], name: str, errors: dict[str, str]) -> datetime | None:
    """A time of the search form: RFC 3339, or what a ``datetime-local`` input sends (read as UTC)."""
    raw = form[name]
    if not raw:
        return None
    moment = parse_datetime(raw)
    if moment is None and len(raw) in (16, 19):  # 2026-12-02T05:30 or 2026-12-02T05:30:00, from the date picker
        moment = parse_datetime(raw.replace(" ", "T") + (":00Z" if len(raw) == 16 else "Z"))
    if moment is None:
        errors[name] = "Give a time such as 2026-12-02T05:30 (UTC) or 2026-12-02T05:30:00Z."
    return moment


# -- buttons -----------------------------------------------------------------------------------------------------


async def send_test(view: View, form: Mapping[str, str]) -> Done:
    found = _webhook(view)
    sent = await actions.send_test(view.services, found)
    outcome = (
        f"answered {sent.attempt.status_code}"
        if sent.attempt.status_code is not None
        else f"failed: {sent.attempt.error}"
    )
    detail = f"Test event {sent.event_id} sent: the endpoint {outcome} in {sent.attempt.duration_ms:.0f} ms."
    return Done(_page_of(found), {"message" if sent.succeeded else "error": detail})


async def pause(view: View, form: Mapping[str, str]) -> Done:
    return await _set_active(view, False, "Paused: deliveries wait until it is resumed.")


async def resume(view: View, form: Mapping[str, str]) -> Done:
    return await _set_active(view, True, "Resumed: waiting deliveries go out now.")


async def _set_active(view: View, active: bool, message: str) -> Done:
    webhook_id = view.request.match_info["webhook_id"]  # the patch finds it inside the scope (404 otherwise)
    found = await actions.patch_webhook(view.services, webhook_id, {"is_active": active}, scope=view.scope)
    return Done(_page_of(found), {"message": message})


async def rotate_secret(view: View, form: Mapping[str, str]) -> Done:
    webhook_id = view.request.match_info["webhook_id"]  # found inside the scope by the rotation (404 otherwise)
    found = await view.services.webhooks.rotate_secret(webhook_id, {}, scope=view.scope)
    secret = found.secret.reveal() if found.secret is not None else ""
    overlap = format_duration(DEFAULT_OVERLAP)
    message = f"A new secret signs from now on; the previous one also signs for {overlap}. It is shown this once:"
    return Done(_page_of(found), {"message": message, "secret": secret})


async def redrive(view: View, form: Mapping[str, str]) -> Done:
    found = _webhook(view)
    include_dead = form.get("include_dead") == "on"
    count = await actions.redrive(view.services, found.id, include_dead=include_dead, scope=view.scope)
    noun = "delivery is" if count == 1 else "deliveries are"
    return Done(_page_of(found), {"message": f"{count} {noun} due again now."})


async def replay(view: View, form: Mapping[str, str]) -> Done:
    event_id = view.request.match_info["event_id"]
    made = await actions.replay(view.services, event_id, None, scope=view.scope)
    noun = "delivery" if len(made) == 1 else "deliveries"
    return Done(f"/ui/events/{_quote(event_id)}", {"message": f"Replayed: {len(made)} new {noun}."})


async def cancel(view: View, form: Mapping[str, str]) -> Done:
    """A pending or parked delivery ends ``cancelled`` (an ordering key it holds moves on); back to its event."""
    back = f"/ui/events/{_quote(form.get('event_id', ''))}" if form.get("event_id") else "/ui/events"
    try:
        cancelled = await actions.cancel(view.services, view.request.match_info["delivery_id"], scope=view.scope)
    except Conflict as exc:
        return Done(back, {"error": str(exc)})
    return Done(f"/ui/events/{_quote(cancelled.event_id)}", {"message": f"Delivery {cancelled.id} cancelled."})


def _webhook(view: View) -> Webhook:
    return view.services.webhooks.get(view.request.match_info["webhook_id"], view.scope)


def _page_of(webhook: Webhook) -> str:
    return f"/ui/webhooks/{_quote(webhook.id)}"


def _quote(value: str) -> str:
    return quote(value, safe="")
