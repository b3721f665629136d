"""The core library shared by the worker, the web app and the CLI."""
