"""A VM's lifecycle beyond create, migrate and delete: its power operations (power.py)."""
