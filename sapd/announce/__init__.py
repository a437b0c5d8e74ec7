"""Local announcements: RFC 2974 schedule, service, sender, routes, sapctl commands."""
