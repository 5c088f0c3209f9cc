"""The conversation brain: backends, agent loop, tools, session state."""
