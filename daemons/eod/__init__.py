"""algo-eod: the end-of-day report (JSON and Markdown) of one journal day."""
