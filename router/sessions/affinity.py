"""Session continuity at the moment a routing decision picks its model.

A decision with ``session_affinity: true`` looks the conversation up: if an earlier turn was pinned to
a model the request may still use, and this decision does not outrank the one that pinned it (higher
``priority``), the conversation keeps that model; otherwise the decision's selection algorithm picks
and the session is pinned to the result. Looper and blocking decisions never read or write the pin, so
a safety block or an escalation answers that turn and the conversation returns to its model after.
A store that cannot answer means no affinity for this request, never a failed request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from router.config.schema import Decision
from router.decisions.selection.spec import Selection
from router.observability import record
from router.sessions.keys import SessionKey
from router.sessions.settings import SessionSettings
from router.sessions.store import Pinned, SessionStore
from router.stores.redis import StoreUnavailable

log = structlog.get_logger("router.sessions")


@dataclass(slots=True)
class Sessions:
    settings: SessionSettings
    store: SessionStore


async def select_with_affinity(
    sessions: Sessions,
    key: SessionKey | None,
    decision: Decision,
    usable: Callable[[str], bool],
    fresh: Callable[[], Selection],
    request_id: str = "",
) -> Selection:
    store = sessions.store.name
    if key is None:
        record.session(store, "no_key")
        return fresh()
    try:
        pinned = await sessions.store.get(key.digest)
    except StoreUnavailable:
        record.session(store, "unavailable")
        log.info("session_unavailable", request_id=request_id, session=key.short, store=store)
        chosen = fresh()
        return replace(chosen, reason=f"session store unavailable, no affinity; {chosen.reason}")
    prefix = ""
    if pinned is not None and usable(pinned.model) and decision.priority <= pinned.priority:
        record.session(store, "kept")
        log.debug("session_kept", request_id=request_id, session=key.short, source=key.source, model=pinned.model)
        return Selection(pinned.model, "session", f"kept {pinned.model} from an earlier turn (decision {pinned.decision})")
    if pinned is None:
        status = "assigned"
    elif not usable(pinned.model):
        status, prefix = "reassigned", f"pinned {pinned.model} no longer usable; "
    else:
        status = "overridden"
        prefix = (
            f"decision {decision.name} (priority {decision.priority}) outranks {pinned.decision} (priority {pinned.priority}); "
        )
    chosen = fresh()
    try:
        await sessions.store.put(key.digest, Pinned(chosen.model, decision.name, decision.priority))
    except StoreUnavailable:
        status, prefix = "unavailable", "session store unavailable, not pinned; " + prefix
    record.session(store, status)
    log.info(
        "session_pinned" if status != "unavailable" else "session_unavailable",
        request_id=request_id,
        session=key.short,
        source=key.source,
        status=status,
        model=chosen.model,
        decision=decision.name,
    )
    return replace(chosen, reason=prefix + chosen.reason) if prefix else chosen
