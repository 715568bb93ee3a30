"""report.json, report.md and report.html from a finished run."""
