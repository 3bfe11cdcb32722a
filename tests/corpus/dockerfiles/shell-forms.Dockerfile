FROM python:3.12-slim
MAINTAINER lab-admins
ENV PYTHONUNBUFFERED=1
ADD app.py /opt/app.py
VOLUME /data
STOPSIGNAL SIGTERM
WORKDIR /opt
CMD python3 /opt/app.py --verbose
