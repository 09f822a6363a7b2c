"""`dycoke run` and `dycoke merge`: records in (records), answers out crash-safely (answers), grouped,
sharded and resumed (job), multiple choice (choices), the end-of-run summary (summary)."""
