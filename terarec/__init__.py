"""terarec: industrial-scale recommendation on TorchRec, from raw logs to a served model."""

# Before anything imports torch: libgomp reads its wait policy once, when it is loaded.
from terarec.runtime import prefer_passive_waiting

prefer_passive_waiting()

__version__ = "0.1.0"
