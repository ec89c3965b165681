"""The web console at /ui: usage dashboard, request log, prompts and chat, for admin keys,
served by the gateway (app.console_app) from server-rendered pages and one small script."""
