"""The journal's files: their layout (layout.py), the compressed market-data frames (frames.py) and
the one reader every consumer uses (reader.py). Shared by algo-journal, replay, algoctl, algo-eod and
the benches, so it depends on nothing but the envelope."""
