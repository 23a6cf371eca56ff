"""The REST API of the contract (``/api/*``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from backend.analytics import TIME_MAX, TIME_MIN, AnalyticsStore
from backend.deps import CurrentUser, State
from backend.quotas import WindowQuota
from backend.shared import BackendState
from backend.store import ACTIVE
from bridge.ingest import append_rows
from bridge.protocol import MAX_AFTER, ApprovalBody, RunBody
from servicekit import ProblemError, StorableStr, problem_responses
from servicekit.rediskeys import AGENTS_CATALOG

__all__ = ["RUN_OPERATIONS", "THREAD_OPERATIONS", "From", "ShortTokens", "To", "router",
           "usage_answer"]

#: each operation's id in the OpenAPI document is its function's name (stable, and
#: what the document's links name)
router = APIRouter(prefix="/api", generate_unique_id_function=lambda route: route.name)
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=64)]


class ThreadBody(BaseModel):
    title: StorableStr = Field(default="", max_length=200)


def _links(parameter: str, pointer: str, *operations: str) -> dict[str, Any]:
    """OpenAPI links: the answer's value at ``pointer`` as ``parameter`` of each operation
    (so a client, or a stateful fuzzer, goes from a created resource to its calls)."""
    return {operation: {"operationId": operation,
                        "parameters": {parameter: f"$response.body#/{pointer}"}}
            for operation in operations}


#: the calls on a thread, and on a run, by operationId
THREAD_OPERATIONS = ("get_thread", "rename_thread", "delete_thread", "list_messages",
                     "create_run")
RUN_OPERATIONS = ("get_run", "run_events", "cancel_run")
_THREAD_LINKS = _links("thread_id", "id", *THREAD_OPERATIONS)
_RUN_LINKS = {**_links("run_id", "id", *RUN_OPERATIONS),
              **_links("thread_id", "thread_id", "get_thread", "list_messages")}


def _not_found(what: str) -> ProblemError:
    return ProblemError(404, "not_found", f"no such {what}")


@router.post("/threads", status_code=201, responses={
    **problem_responses(400, 401, 413), 201: {"description": "the thread", "links": _THREAD_LINKS}})
async def create_thread(body: ThreadBody, user: CurrentUser, state: State) -> dict[str, Any]:
    return await state.store.create_thread(user.user_id, body.title)


@router.get("/threads", responses=problem_responses(401))
async def list_threads(user: CurrentUser, state: State, limit: Limit = 50,
                       cursor: Cursor = None) -> dict[str, Any]:
    items, next_cursor = await state.store.threads(user.user_id, limit, cursor)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/threads/{thread_id}", responses={
    **problem_responses(401, 404), 200: {"description": "the thread", "links": _THREAD_LINKS}})
async def get_thread(thread_id: str, user: CurrentUser, state: State) -> dict[str, Any]:
    thread = await state.store.thread(user.user_id, thread_id)
    if thread is None:
        raise _not_found("thread")
    return thread


@router.patch("/threads/{thread_id}", responses=problem_responses(400, 401, 404, 413))
async def rename_thread(thread_id: str, body: ThreadBody, user: CurrentUser,
                        state: State) -> dict[str, Any]:
    thread = await state.store.rename_thread(user.user_id, thread_id, body.title)
    if thread is None:
        raise _not_found("thread")
    return thread


@router.delete("/threads/{thread_id}", status_code=204,
               responses=problem_responses(401, 404))
async def delete_thread(thread_id: str, user: CurrentUser, state: State) -> Response:
    """The thread goes with its messages and runs; its active runs are cancelled."""
    active = await state.store.delete_thread(user.user_id, thread_id)
    if active is None:
        raise _not_found("thread")
    for run_id, agent in active:
        await state.runs.stop(user.user_id, run_id, "user", thread_id=thread_id, agent=agent)
    await (await state.runs.top_up([user.user_id])).send()  # its runs left the window
    return Response(status_code=204)


@router.get("/agents", responses=problem_responses(401))
async def agents(user: CurrentUser, state: State) -> dict[str, Any]:
    """The agents the workers announce, with their tools' JSON schemas."""
    catalog = await state.redis.hgetall(AGENTS_CATALOG)
    items = [json.loads(value) for _, value in sorted(catalog.items())]
    return {"items": items}


@router.get("/threads/{thread_id}/messages", responses=problem_responses(401, 404))
async def list_messages(thread_id: str, user: CurrentUser, state: State, limit: Limit = 50,
                        cursor: Cursor = None) -> dict[str, Any]:
    if await state.store.thread(user.user_id, thread_id) is None:
        raise _not_found("thread")
    await state.runs.settle_thread(user.user_id, thread_id)  # answers already sent are here
    items, next_cursor = await state.store.messages(user.user_id, thread_id, limit, cursor)
    return {"items": items, "next_cursor": next_cursor}


@router.post("/threads/{thread_id}/runs", status_code=202, responses={
    **problem_responses(400, 401, 404, 409, 413, 429),
    202: {"description": "the run, queued", "links": _RUN_LINKS}})
async def create_run(thread_id: str, body: RunBody, user: CurrentUser,
                     state: State) -> dict[str, Any]:
    created = await state.runs.create(user.user_id, thread_id, body.input, body.agent,
                                      body.multitask)
    await state.runs.after_create(created)
    return created.run


@router.get("/runs/{run_id}", responses={
    **problem_responses(401, 404), 200: {"description": "the run", "links": _RUN_LINKS}})
async def get_run(run_id: str, user: CurrentUser, state: State) -> dict[str, Any]:
    run = await state.runs.read(user.user_id, run_id)
    if run is None:
        raise _not_found("run")
    return run


#: ``after`` of the events endpoint: a seq (a Redis stream id's first part, which
#: a 64-bit integer holds); beyond that, 422 naming the field
EventCursor = Annotated[int, Query(ge=0, le=MAX_AFTER)]
EventLimit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/runs/{run_id}/events", responses=problem_responses(401, 404))
async def run_events(run_id: str, user: CurrentUser, state: State, after: EventCursor = 0,
                     limit: EventLimit = 100) -> dict[str, Any]:
    """Up to ``limit`` of the run's events with ``seq > after`` that the user's history
    still holds; ``next_after``: the ``after`` of the next page, null once the run's
    terminal event was returned (or the run ended and the history holds no more)."""
    run = await state.runs.read(user.user_id, run_id)
    if run is None:
        raise _not_found("run")
    page = await state.streams.read_run(user.user_id, run_id, after, limit=limit)
    over = page.ended or (page.exhausted and run["status"] not in ACTIVE)
    return {"items": page.events, "next_after": None if over else page.cursor}


def _storable_time(value: datetime | None) -> datetime | None:
    """A time (a window's bound, a usage record's) within what ClickHouse's DateTime64
    holds (naive: UTC); anything else is the caller's mistake, a 422 naming the field."""
    if value is None:
        return None
    try:
        utc: datetime | None = value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)
    except OverflowError:  # an offset that moves it before year 1 or past 9999
        utc = None
    if utc is None or not TIME_MIN <= utc <= TIME_MAX:
        raise ValueError(f"outside the range analytics hold: {TIME_MIN.isoformat()} "
                         f"to {TIME_MAX.isoformat()}")
    return value


class UsageRecord(BaseModel):
    ts: Annotated[AwareDatetime, AfterValidator(_storable_time)]
    model: StorableStr = Field(min_length=1, max_length=100)
    prompt_tokens: int = Field(ge=0, le=100_000_000)
    completion_tokens: int = Field(ge=0, le=100_000_000)
    cost_usd: Decimal = Field(ge=0, le=1_000_000, decimal_places=6)
    latency_ms: int = Field(ge=0, le=86_400_000)
    status: StorableStr = Field(min_length=1, max_length=32)
    # a user's records are the user's own: "agents" (the platform's agents' model
    # calls, which only the workers record) is refused with a 422 naming the field
    source: Literal["user"] = Field(
        default="user", description="Always \"user\": the platform's agents record their "
                                    "own model calls themselves.")


class UsageBody(BaseModel):
    records: list[UsageRecord] = Field(min_length=1, max_length=10_000)


GroupBy = Annotated[Literal["model", "day"], Query()]
From = Annotated[datetime | None, Query(alias="from"), AfterValidator(_storable_time)]
To = Annotated[datetime | None, Query(alias="to"), AfterValidator(_storable_time)]
ShortTokens = Annotated[int | None, Query(ge=1, le=1_000_000)]


@router.post("/analytics/usage", status_code=202,
             responses=problem_responses(400, 401, 413, 429))
async def post_usage(body: UsageBody, user: CurrentUser, state: State) -> dict[str, Any]:
    """The caller's AI usage records, queued on the ingest stream for ClickHouse."""
    await WindowQuota(state.redis, "usage", state.settings.usage_records_per_minute,
                      unit="usage records").take(user.user_id, len(body.records))
    await append_rows(state.redis, "usage", [
        {**record.model_dump(mode="json"), "user_id": user.user_id} for record in body.records],
        maxlen=state.settings.ingest_maxlen)
    return {"accepted": len(body.records)}


@router.get("/analytics/usage", responses=problem_responses(401))
async def get_usage(
    user: CurrentUser, state: State, group_by: GroupBy = "model",
    start: From = None, end: To = None,
    short_tokens: ShortTokens = None,
) -> dict[str, Any]:
    return await usage_answer(state, user.user_id, start, end, group_by, short_tokens)


async def usage_answer(state: BackendState, user_id: str, start: datetime | None,
                       end: datetime | None, group_by: str, short_tokens: int | None
                       ) -> dict[str, Any]:
    """Usage aggregates of ``user_id`` between ``start`` and ``end`` (default: the
    last 30 days)."""
    start, end = _window(start, end, 30)
    items = await _analytics(state).usage(user_id, start, end, group_by, short_tokens)
    return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by,
            "items": items}


def _analytics(state: BackendState) -> AnalyticsStore:
    if state.analytics is None:
        raise ProblemError(503, "analytics_unavailable", "this replica does not serve analytics")
    return state.analytics


@router.get("/analytics/runs", responses=problem_responses(401))
async def analytics_runs(
    user: CurrentUser, state: State,
    start: From = None, end: To = None,
) -> dict[str, Any]:
    return {"items": await _analytics(state).runs(user.user_id, *_window(start, end, 7))}


@router.get("/analytics/tools", responses=problem_responses(401))
async def analytics_tools(
    user: CurrentUser, state: State,
    start: From = None, end: To = None,
) -> dict[str, Any]:
    """Per tool: calls, failures and duration percentiles of the caller's runs."""
    return {"items": await _analytics(state).tools(user.user_id, *_window(start, end, 7))}


def _window(start: datetime | None, end: datetime | None, days: int
            ) -> tuple[datetime, datetime]:
    """The query's window: ``to`` defaults to now, ``from`` to ``days`` before it."""
    end = _aware(end) or datetime.now(UTC) + timedelta(minutes=1)
    return _aware(start) or max(end - timedelta(days=days), TIME_MIN), end


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@router.post("/runs/{run_id}/approvals/{call_id}", status_code=202,
             responses=problem_responses(401, 404, 409, 413))
async def answer_approval(run_id: str, call_id: str, body: ApprovalBody, user: CurrentUser,
                          state: State) -> dict[str, Any]:
    """Approve or reject a call that waits for its user (``approval_required``): the
    run goes on, on any worker. 409 when no such call waits (answered, expired)."""
    await state.approvals.answer(user.user_id, run_id, call_id, approve=body.approve)
    return {"run_id": run_id, "call_id": call_id, "approved": body.approve}


@router.post("/runs/{run_id}/cancel", status_code=202,
             responses=problem_responses(401, 404, 409))
async def cancel_run(run_id: str, user: CurrentUser, state: State) -> dict[str, Any]:
    await state.runs.cancel(user.user_id, run_id)
    return {"run_id": run_id, "status": "cancelling"}
