"""The application's jobs. Importing this package registers them all."""

from tourno.jobs.demo import DemoJob

__all__ = ["DemoJob"]
