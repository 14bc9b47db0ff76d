"""Screens of the console: the dashboard, help, action modal, action history, details."""
