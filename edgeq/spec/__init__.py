"""INT8 spec and deployability checks: rules as data, target profiles, the check engine."""
