"""`dycoke profile`: settings measured side by side (runner), aggregated into a report (report)."""
