"""uss-auditor: checks that the USS AzureAD app holds what it needs in every tenant, and what it costs."""

__version__ = "0.1.0"
