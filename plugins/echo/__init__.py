"""The echo plugin: the worked example of the plugin API, and the demo's legacy "network"."""
