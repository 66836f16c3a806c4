"""The admin pages: users, sign-ins, the audit log, associations, deliveries, peers / destinations / routes with the dry run, study operations, API tokens."""
