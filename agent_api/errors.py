"""The domain's exceptions and how each maps to an HTTP status.

    AgentAPIError                 base: carries a status code and a detail safe to show callers
    ├── Unauthorized              401  no API key, or an unknown one (WWW-Authenticate)
    ├── SessionNotFound           404  unknown, expired or not the caller's session
    ├── RunNotFound               404  unknown, expired or not the caller's run
    ├── TeamNotFound              404  no team of that name, where a team is a resource (/v1/models)
    ├── RunStopped                409  the run was cancelled or interrupted before it finished
    ├── SessionBusy               409  another run is in progress on the session
    ├── SessionTeamMismatch       409  the session belongs to another team
    ├── RunIdTaken                409  a client-chosen run id (AG-UI's runId) is in use
    ├── RunNotWaiting             409  input for a run that is not waiting for any
    ├── WrongInputRequest         409  input that answers another request than the one pending
    ├── UnknownTeam               422  no team of that name
    ├── InvalidField              422  a field's value is refused (a webhook URL, an event cursor)
    ├── RateLimited               429  the key's request rate or concurrent runs (Retry-After)
    ├── BudgetExceeded            429  the key used its daily token budget (Retry-After: until it resets)
    ├── Forbidden                 403  a key asked for what only an admin key may read
    ├── AgentRunError             500  the agents failed for a reason other than the model
    ├── WorkerLost                500  the worker running the run died; nothing was saved
    ├── RunFailed                 any  a run that failed elsewhere, as its record tells
    ├── StoreUnavailable          503  Redis cannot be reached (or no connection came free in time)
    ├── ShuttingDown              503  the service is stopping (Retry-After)
    ├── RunTimedOut               504  the run took longer than RUN_TIMEOUT in all
    ├── InputTimedOut             504  nobody answered the run's request for input within INPUT_TIMEOUT
    └── ModelError                502  the model provider failed or answered with an error
        ├── ModelTimeout          504  the model did not answer within LLM_TIMEOUT
        └── ModelRateLimited      503  the provider rate-limited us (Retry-After passed on)

    RunCancelled                  not an HTTP error: the caller went away and the run was stopped

Details are fixed sentences written here; the text of the exception that caused one is logged,
never sent to the caller.
"""

from __future__ import annotations

from datetime import UTC, datetime


class AgentAPIError(Exception):
    """Base of every error agent-api reports to a caller."""

    status_code = 500
    detail = "Internal server error."
    error_type = "internal"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail:
            self.detail = detail
        self.headers = headers or {}


class SessionNotFound(AgentAPIError):
    """The session does not exist, has expired, or belongs to someone else."""

    status_code = 404
    detail = "Session not found: it does not exist or has expired."
    error_type = "not_found"


class StoreUnavailable(AgentAPIError):
    """The session store (Redis) could not be reached."""

    status_code = 503
    detail = "The session store is unavailable; try again shortly."
    error_type = "store"


class ModelError(AgentAPIError):
    """The model provider failed or answered with an error."""

    status_code = 502
    detail = "The model provider returned an error; the session was not changed."
    error_type = "upstream_error"


class ModelTimeout(ModelError):
    """The model did not answer within ``LLM_TIMEOUT``."""

    status_code = 504
    detail = "The model did not answer in time; the session was not changed."
    error_type = "upstream_timeout"


class ModelRateLimited(ModelError):
    """The model provider rate-limited the service."""

    status_code = 503
    detail = "The model provider is rate-limiting requests; retry later. The session was not changed."
    error_type = "upstream_rate_limit"


class RunCancelled(Exception):
    """Raised inside a running team when its caller has gone away."""


class UnknownTeam(AgentAPIError):
    """The request names a team that is not registered."""

    status_code = 422
    error_type = "validation"

    def __init__(self, name: str, valid: list[str]) -> None:
        super().__init__(f"Unknown agent team {name!r}; valid teams: {', '.join(valid)}.")
        self.detail_body = [{"loc": ["body", "agent"], "msg": self.detail, "type": "value_error"}]


class TeamNotFound(AgentAPIError):
    """The team named where a team is the resource (an OpenAI model, an AG-UI agent) does not exist."""

    status_code = 404
    error_type = "model_not_found"

    def __init__(self, name: str, loc: list[str | int]) -> None:
        super().__init__(f"There is no team {name!r} (GET /agents lists them).")
        self.detail_body = [{"loc": loc, "msg": self.detail, "type": "value_error"}]


class RunIdTaken(AgentAPIError):
    """The run id the client chose is in use."""

    status_code = 409
    detail = "A run with this id exists already: choose a new run id."
    error_type = "conflict"


class AgentRunError(AgentAPIError):
    """The agents failed for a reason other than the model (a bug, a broken tool)."""

    status_code = 500
    detail = "The agent team failed while running; the session was not changed."
    error_type = "agent"


class SessionTeamMismatch(AgentAPIError):
    """The request names a different team from the one the session belongs to."""

    status_code = 409
    error_type = "conflict"

    def __init__(self, session_team: str, requested: str) -> None:
        super().__init__(
            f"This session belongs to team {session_team!r}; it cannot be continued with "
            f"{requested!r}. Omit 'agent' or start a new session."
        )


class Unauthorized(AgentAPIError):
    """No API key, or one that is not configured."""

    status_code = 401
    error_type = "auth"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="agent-api"'})


class SessionBusy(AgentAPIError):
    """Another run is in progress on this session."""

    status_code = 409
    detail = "Another request is already running on this session; retry when it has finished."
    error_type = "conflict"


class RateLimited(AgentAPIError):
    """The caller's key went over its request rate or its concurrent runs."""

    status_code = 429
    error_type = "rate_limit"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ShuttingDown(AgentAPIError):
    """The service is stopping: the turn was refused, or cancelled at the end of the grace period."""

    status_code = 503
    detail = "The service is restarting; this turn was not run or not finished, and nothing was saved. Retry."
    error_type = "shutdown"

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"})


class RunNotFound(AgentAPIError):
    """The run does not exist, has expired, or belongs to another key."""

    status_code = 404
    detail = "Run not found: it does not exist or has expired."
    error_type = "not_found"


class RunStopped(AgentAPIError):
    """The run was cancelled (or interrupted by a newer run) before it finished; nothing was saved."""

    status_code = 409
    error_type = "cancelled"

    def __init__(self, error_type: str = "cancelled") -> None:
        self.error_type = error_type
        what = "interrupted by a newer run on its session" if error_type == "interrupted" else "cancelled"
        super().__init__(f"The run was {what}; nothing of it was saved.")


class WorkerLost(AgentAPIError):
    """The worker process running the run stopped without finishing it (a crash, a kill)."""

    status_code = 500
    detail = "The worker running this turn stopped unexpectedly; nothing was saved. Retry."
    error_type = "worker_lost"


class InvalidField(AgentAPIError):
    """A request field has a value that is refused for a reason its schema cannot say."""

    status_code = 422
    error_type = "validation"

    def __init__(self, loc: list[str | int], message: str) -> None:
        super().__init__(message)
        self.detail_body = [{"loc": loc, "msg": message, "type": "value_error"}]


class RunFailed(AgentAPIError):
    """A run that failed in a worker, rebuilt from its record's ``error`` for the caller waiting on it."""

    def __init__(self, error_type: str, detail: str, status_code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, headers=headers)
        self.error_type = error_type
        self.status_code = status_code


class RunTimedOut(AgentAPIError):
    """The run as a whole took longer than ``RUN_TIMEOUT`` (however many model calls and retries)."""

    status_code = 504
    error_type = "run_timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The run took longer than {seconds:g} s in all (RUN_TIMEOUT) and was stopped; nothing was saved."
        )


class InputTimedOut(AgentAPIError):
    """The run asked a person and nobody answered within ``INPUT_TIMEOUT``."""

    status_code = 504
    error_type = "input_timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"Nobody answered the run's request for input within {seconds:g} s (INPUT_TIMEOUT); the run was "
            "stopped and nothing was saved."
        )


class RunNotWaiting(AgentAPIError):
    """Input was sent for a run that is not waiting for any."""

    status_code = 409
    error_type = "not_waiting"

    def __init__(self, status: str) -> None:
        super().__init__(f"The run is not waiting for input (its status is {status}); nothing was changed.")


class WrongInputRequest(AgentAPIError):
    """Input that answers another request than the one the run waits on (an old one, or a typo)."""

    status_code = 409
    error_type = "wrong_request"

    def __init__(self, pending: str) -> None:
        super().__init__(
            f"The run waits on request {pending}, not the one answered; nothing was changed. "
            "Read the pending request at GET /runs/{run_id}."
        )


class BudgetExceeded(AgentAPIError):
    """The key has used its daily token budget; refused before any model call."""

    status_code = 429
    error_type = "budget_exceeded"

    def __init__(self, limit: int, used: int, resets_at: datetime) -> None:
        wait = max(1, int((resets_at - datetime.now(UTC)).total_seconds()))
        super().__init__(
            f"This API key has used its daily budget of {limit} tokens ({used} used today); "
            f"it resets at {resets_at.strftime('%Y-%m-%dT%H:%M:%SZ')}.",
            headers={"Retry-After": str(wait)},
        )


class Forbidden(AgentAPIError):
    """The key is valid but may not read this (another key's usage, without an admin key)."""

    status_code = 403
    error_type = "forbidden"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
