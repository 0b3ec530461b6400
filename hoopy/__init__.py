"""hoopy: a MySQL gateway for autonomous agents."""

__version__ = "0.1.0"
