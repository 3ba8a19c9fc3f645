"""Settings: the one place the environment (and ``.env``) is read."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, RedisDsn, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of agent-api, read from the environment or a ``.env`` file.

    With nothing set the service runs on its embedded defaults: sessions in an in-process store
    and the offline model. ``REDIS_URL`` switches to a real Redis; ``OPENAI_API_KEY`` (or
    ``OPENAI_BASE_URL`` or ``OAI_CONFIG_LIST``) to a real model.
    """

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore", hide_input_in_errors=True)

    # The model
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o"
    oai_config_list: str | None = Field(
        default=None, description="AutoGen config list: a JSON list, or the path of a JSON file holding one."
    )
    llm_timeout: float = Field(default=60.0, gt=0, description="Seconds one model request may take.")
    llm_max_retries: int = Field(default=2, ge=0, le=10, description="Retries of a failed model request.")
    llm_temperature: float | None = Field(default=None, ge=0, le=2)

    llm_cache: Literal["off", "redis"] = Field(
        default="off", description="'redis': answer identical first-turn model requests from Redis."
    )
    llm_cache_ttl: int = Field(default=3600, ge=1, description="Seconds a cached model response is kept.")

    # Sessions
    redis_url: RedisDsn | None = None
    redis_max_connections: int = Field(default=200, ge=1)
    redis_timeout: float = Field(default=5.0, gt=0, description="Seconds to connect to Redis or wait for a reply.")
    redis_max_followers: int = Field(
        default=1000,
        ge=1,
        description="Connections for blocking reads: one per open stream while the pub/sub connection that "
        "carries streams' events is down, and one per wait for a run's end other than a /chat's, "
        "a /v1/chat/completions' or an A2A message/send's (a cancel waiting for its run to stop).",
    )
    redis_pool_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for a free pooled connection.")
    session_ttl: int = Field(default=3600, ge=1, description="Seconds a session lives after its last turn.")
    max_history_messages: int = Field(default=100, ge=2, description="Messages kept per session (oldest dropped).")

    # Running agents
    thread_pool_size: int = Field(default=200, ge=1, le=2000, description="Threads that run AutoGen conversations.")
    teams_dir: Path | None = Field(default=None, description="Directory of extra team files (YAML or JSON).")
    team_plugins: str = Field(default="", description="Comma-separated 'module:function' returning Team objects.")
    workers_in_process: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Run workers inside each API process. 0: runs go to `agent-api worker` processes (needs Redis).",
    )
    worker_processes: int | None = Field(
        default=None,
        ge=0,
        le=256,
        description=(
            "`agent-api worker` processes that `agent-api serve` starts beside the API and restarts if one dies "
            "(needs Redis). Default: one per core with REDIS_URL, none without."
        ),
    )
    run_ttl: int = Field(default=86400, ge=60, description="Seconds a run and its events are kept after it ends.")
    run_timeout: float = Field(
        default=900.0,
        ge=0,
        description="Seconds a run may take in all (every model call, tool and retry); past it the run fails "
        "run_timeout and saves nothing. 0: no limit.",
    )
    input_timeout: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a run waits for a person's answer (human_input, approve_tools) before it fails "
        "input_timeout. The wait does not count against run_timeout.",
    )
    run_heartbeat: int = Field(
        default=10, ge=2, le=600, description="Seconds without a worker heartbeat before a run is failed worker_lost."
    )
    sse_ping_seconds: float = Field(default=15.0, gt=0, description="Keep-alive comment interval on streams.")

    # Security and limits
    environment: Literal["development", "production"] = "development"
    api_keys: SecretStr = Field(
        default=SecretStr(""), description="Comma-separated API keys, plain or as sha256:<hex>; blanks ignored."
    )
    admin_api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated admin keys (plain or sha256:<hex>): API keys that may also read any key's "
        "usage (GET /usage?key_id=).",
    )
    daily_token_budget: int = Field(
        default=0, ge=0, description="Tokens a key may use per UTC day (prompt + completion); 0: no budget."
    )
    key_token_budgets: str = Field(
        default="", description="Per-key daily budgets overriding daily_token_budget: key_id=tokens,...; 0: none."
    )
    usage_retention_days: int = Field(default=400, ge=1, description="Days the per-key usage counts are kept.")
    rate_limit: str = Field(default="120/minute", description="Requests per key, e.g. 60/minute; empty: no limit.")
    max_concurrent_runs_per_key: int = Field(default=8, ge=0, description="Runs in progress per key; 0: no limit.")
    lease_ttl: float = Field(default=30.0, gt=1, description="Seconds a crashed worker's session lock outlives it.")
    max_body_bytes: int = Field(default=65536, ge=1024)
    cors_origins: str = Field(default="", description="Comma-separated origins allowed by CORS; empty: none.")
    docs_enabled: bool = Field(default=True, description="Serve /docs, /redoc and /openapi.json (without a key).")

    # Webhooks
    webhook_secret: SecretStr | None = Field(
        default=None, description="Standard Webhooks signing secret (whsec_...); unset: a random one per process."
    )
    webhook_allow_private: bool = Field(
        default=False, description="Allow webhook URLs on loopback, private or link-local addresses."
    )
    webhook_timeout: float = Field(default=10.0, gt=0, description="Seconds one webhook delivery attempt may take.")
    webhook_max_attempts: int = Field(default=5, ge=1, le=20, description="Delivery attempts per webhook.")

    # Serving
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int | None = Field(
        default=None,
        ge=1,
        description="API processes of `agent-api serve`. Default with REDIS_URL: one per two cores, and two "
        "on a machine of two or three cores; 1 without.",
    )
    keep_alive_timeout: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="Seconds an idle HTTP connection is kept open; above the idle time of proxies and client "
        "pools (60 s is common), so that they, not the server, close idle connections.",
    )
    log_level: str = "info"
    log_format: Literal["json", "text"] = "json"

    # Traces
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector (e.g. http://localhost:4318): trace every request and run there. "
        "Unset: tracing is off.",
    )
    otel_service_name: str = Field(default="agent-api", description="The service.name of the spans.")
    trace_content: bool = Field(
        default=False, description="Put prompts, answers, tool arguments and results in spans (off: never)."
    )
    metrics_enabled: bool = Field(default=True, description="Serve Prometheus metrics at /metrics (without a key).")
    shutdown_grace_seconds: float = Field(
        default=20.0, ge=0, description="On SIGTERM, how long in-flight runs may go on before they are cancelled."
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("must be one of critical, error, warning, info, debug")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _parse_rate(cls, value: str) -> str:
        if value.strip():
            from limits import parse

            parse(value)  # raises ValueError with the reason
        return value.strip()

    @field_validator("key_token_budgets")
    @classmethod
    def _parse_budgets(cls, value: str) -> str:
        from agent_api.services.usage import Budgets

        Budgets.parse(0, value)  # raises ValueError with the reason
        return value.strip()

    @model_validator(mode="after")
    def _safe_for_production(self) -> Settings:
        if self.redis_url is None and self.workers_in_process == 0:
            raise ValueError("WORKERS_IN_PROCESS=0 needs REDIS_URL: without Redis, runs can only run in-process")
        if self.redis_url is None and self.worker_processes:
            raise ValueError("WORKER_PROCESSES needs REDIS_URL: worker processes take runs from Redis")
        if self.environment == "production" and not self.api_key_list:
            raise ValueError("ENVIRONMENT=production requires API_KEYS: refusing to serve without authentication")
        if self.environment == "production" and "*" in self.cors_origin_list:
            raise ValueError("ENVIRONMENT=production does not allow CORS_ORIGINS=*")
        return self

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

    @property
    def admin_key_list(self) -> list[str]:
        return [k.strip() for k in self.admin_api_keys.get_secret_value().split(",") if k.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def team_plugin_list(self) -> list[str]:
        return [p.strip() for p in self.team_plugins.split(",") if p.strip()]

    @property
    def api_processes(self) -> int:
        """API processes ``agent-api serve`` runs: ``WORKERS``, else with Redis one per two cores and at
        least two where there are two cores (one alone is the slowest step while a burst of streams
        starts, and delays the tokens of those already going: docs/performance.md), else 1."""
        if self.workers is not None:
            return self.workers
        if self.redis_url is None:
            return 1
        cores = os.cpu_count() or 1
        return max(min(2, cores), cores // 2)

    @property
    def run_worker_processes(self) -> int:
        """``agent-api worker`` processes ``agent-api serve`` starts: ``WORKER_PROCESSES``, else one per core
        with Redis, else none."""
        if self.worker_processes is not None:
            return self.worker_processes
        return (os.cpu_count() or 1) if self.redis_url is not None else 0

    @property
    def uses_offline_model(self) -> bool:
        return self.openai_api_key is None and self.openai_base_url is None and self.oai_config_list is None

    def load_config_list(self) -> list[dict[str, Any]]:
        """The user's ``OAI_CONFIG_LIST``: inline JSON or a file path; [] when unset."""
        if not self.oai_config_list:
            return []
        raw = self.oai_config_list.strip()
        if not raw.startswith("["):
            raw = Path(raw).read_text()
        entries = json.loads(raw)
        if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("model") for e in entries):
            raise ValueError("OAI_CONFIG_LIST must be a JSON list of objects, each with a 'model'")
        return entries


@lru_cache
def get_settings() -> Settings:
    return Settings()
