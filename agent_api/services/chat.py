"""ChatService: one user turn, from the stored session through the team and back to the store."""

from __future__ import annotations

from dataclasses import dataclass

from agent_api.agents.registry import TeamRegistry
from agent_api.agents.runner import TeamRunner
from agent_api.agents.teams import Team
from agent_api.errors import AgentAPIError, SessionTeamMismatch
from agent_api.models.chat import AgentRequest, AgentResponse
from agent_api.services.sessions import Session, SessionManager


@dataclass(frozen=True)
class Turn:
    """A turn that passed every check and may run: its team and its session as loaded."""

    team: Team
    session: Session
    request: AgentRequest


class ChatService:
    """Runs user turns against teams, keeping each session's history in the store."""

    def __init__(self, sessions: SessionManager, runner: TeamRunner, teams: TeamRegistry) -> None:
        self.sessions = sessions
        self.runner = runner
        self.teams = teams

    async def begin(self, request: AgentRequest) -> Turn:
        """Resolve the team and the session; nothing is written before every check has passed."""
        if request.session_id is None:
            team = self.teams.get(request.agent)
            session = await self.sessions.create(team.name)
            return Turn(team, session, request)
        session = await self.sessions.load(request.session_id)
        # A session stays with its team: 'agent' may be omitted when continuing.
        name = request.agent if "agent" in request.model_fields_set else session.agent
        if name != session.agent:
            raise SessionTeamMismatch(session.agent, name)
        team = self.teams.get(name)
        await self.sessions.touch(session.id)
        return Turn(team, session, request)

    async def chat(self, request: AgentRequest) -> AgentResponse:
        """Run one turn to the end and save only the messages it added."""
        turn = await self.begin(request)
        try:
            outcome = await self.runner.run(turn.team, turn.session.messages, request.message, request.max_turns)
        except AgentAPIError as exc:
            exc.headers.setdefault("X-Session-ID", turn.session.id)
            raise
        await self.sessions.append_messages(turn.session.id, outcome.messages)
        return AgentResponse(
            session_id=turn.session.id,
            response=outcome.response,
            turns_used=outcome.turns_used,
            messages=outcome.messages,
            finished=outcome.finished,
            agent=turn.team.name,
            usage=outcome.usage,
        )
