"""Pictures, charts and report.html, drawn from results; nothing here decides what a result is."""
