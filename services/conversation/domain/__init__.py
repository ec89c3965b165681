"""The conversation service's aggregates (Conversation, ManagedPrompt), their events and errors.

No NATS, no store, no model calls: what is true of a conversation or a prompt whatever carries it.
"""
