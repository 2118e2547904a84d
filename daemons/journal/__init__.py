"""algo-journal: every bus event appended durably, one directory per day, and the day's CSVs."""
