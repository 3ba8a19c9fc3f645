"""The job queue's log: saq's notice of its zero shutdown grace period is dropped, nothing else."""

from __future__ import annotations

import inspect
import logging

from saq.worker import Worker

from agent_api.runs.queue import _ZERO_GRACE_NOTICE


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("saq", logging.WARNING, __file__, 1, message, None, None)


def test_only_saqs_notice_of_its_zero_grace_period_is_dropped() -> None:
    # the message saq's Worker.stop logs when its grace period (0 here) runs out
    assert "Some tasks did not finish within the shutdown grace period" in inspect.getsource(Worker.stop)
    notice = "Some tasks did not finish within the shutdown grace period, requesting cancellation"
    assert not _ZERO_GRACE_NOTICE.filter(_record(notice))
    stuck = "Some tasks did not finish cancellation in time, they may be stuck or blocked"
    assert _ZERO_GRACE_NOTICE.filter(_record(stuck))
    assert _ZERO_GRACE_NOTICE.filter(_record("Aborting %s"))
