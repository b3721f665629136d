"""The Flask web app: login, REST API, dashboard and websocket relay."""
