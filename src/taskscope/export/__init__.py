"""Exports of the store for other tools: Parquet (partitioned by run), Chrome/Perfetto trace JSON,
OTLP/JSON logs. One module per format."""
