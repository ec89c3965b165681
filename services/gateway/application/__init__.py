"""The gateway's application: who a key belongs to, asked of the usage service and cached."""
