"""The OpenAI-compatible HTTP gateway: a thin, stateless edge that turns an OpenAI
chat.completions call into a CompletionRequested on NATS and relays the answer, for the user,
team and project of the key the call brings."""
