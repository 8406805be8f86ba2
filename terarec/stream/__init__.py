"""Streaming training: time-ordered chunks in one pass, progressive validation, exactly-once commits, deltas.

``stream(config)`` / ``terarec stream CONFIG`` (``loop``) reads chunks from a ``ChunkSource``
(``source``: a folder of Parquet partitions by default), evaluates each chunk before training on
it, commits model, optimizer and vocabulary state with the chunk's name after each, and publishes
embedding deltas for the server (``publish``). See docs/streaming.md.
"""
