# syntax=docker/dockerfile:1
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS build
ARG VERSION=1.2
ENV PIP_NO_CACHE_DIR=1 APP_HOME=/opt/app
ENV LEGACY_FORM legacy value
WORKDIR /src
COPY app.py requirements.txt /src/
RUN apt-get update \
    # a comment inside a continuation is dropped, as Docker does
    && apt-get install -y --no-install-recommends python3 \
    && echo "$VERSION" > /src/version

FROM debian:bookworm-slim
COPY --from=build /src /opt/app
LABEL org.example.team=vision org.example.note="two words"
EXPOSE 8080
ENTRYPOINT ["python3", "/opt/app/app.py"]
CMD ["--port", "8080"]
