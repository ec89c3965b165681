"""Who may connect to NATS and what each may do: keys, the server's accounts, the clients."""
