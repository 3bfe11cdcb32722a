FROM --platform=linux/amd64 debian:bookworm AS base
ARG TOKEN
USER app
SHELL ["/bin/bash", "-c"]
HEALTHCHECK CMD curl -f http://localhost/
ONBUILD RUN echo later
RUN ["echo", "exec form"]
RUN --mount=type=cache,target=/root/.cache pip install numpy
COPY --chown=app:app app.py /opt/
COPY ["app.py", "/opt/"]
COPY --from=0 /a /b
ADD https://example.org/tool.tar.gz /opt/
ADD bundle.tar.gz /opt/
RUN <<EOT
echo heredoc
EOT
FROM base
FROBNICATE now
ENTRYPOINT python3 app.py
CMD ["--flag"]
