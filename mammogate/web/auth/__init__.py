"""Who may use the portal: local accounts and their policy, sessions, OpenID Connect sign-in, sign-in throttling, API tokens, the session key."""
