"""agent-api: AutoGen multi-agent teams behind a production HTTP API."""

import warnings

__version__ = "0.1.0"

# google-api-core (under a2a-sdk) warns on import, on stderr, that its future releases drop
# Python 3.11: nothing an operator of this service can act on.
warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning)
