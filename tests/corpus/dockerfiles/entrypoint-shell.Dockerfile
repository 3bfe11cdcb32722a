FROM python:3.12-slim
ENTRYPOINT exec python3 -m http.server
