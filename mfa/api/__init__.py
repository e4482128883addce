"""Thin HTTP endpoints: parse, call a service, render JSON."""
