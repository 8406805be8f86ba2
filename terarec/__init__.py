"""terarec: industrial-scale recommendation on TorchRec, from raw logs to a served model."""

__version__ = "0.1.0"
