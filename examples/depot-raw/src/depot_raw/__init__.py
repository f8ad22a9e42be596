"""An example third-party depot ecosystem: plain files under ``/raw``."""
