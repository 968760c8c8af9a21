"""Analyses: where the time goes. Each is a function over a store (a `Store` or its DuckDB
connection) returning a pandas DataFrame; the heavy work is SQL inside DuckDB.

One module per analysis: common_path, states, between, series, latency, bottlenecks, summary, compare;
and the questions every presenter asks: runs, tasks (one task in detail too), resources, logs (the log explorer).
"""
