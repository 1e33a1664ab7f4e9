"""vdcos: a Virtual Datacenter OS."""

__version__ = "0.1.0"
