"""The only package that imports the Microsoft SDKs (msgraph, kiota, azure.identity)."""
