"""The engine: config -> sources, rules, the poll scheduler, audit, incidents, playbooks, recorder."""
