"""Conversion: the record batches of a sealed segment in, a data table and a dead-letter table
out (the Parquet files themselves are :mod:`wal_bridge.parquet`'s).

``flat`` reads a segment of flat, well-typed records in one parse; ``casting`` turns a field's
JSON text into its column's type.
"""
