"""The gateway's domain: OpenAI's request and response shapes as llmbus's contracts, and llmbus's
errors as OpenAI's. Pure: no HTTP, no NATS."""
