# The image of a run on the bus with the docker runtime (`manobench-bus`): the services' image
# (manobench-target, TARGET_IMAGE) plus Debian's rabbitmq-server for the run's broker container, and the AMQP
# client the services speak (aio-pika, aiormq, pamqp: pure Python, copied from the harness's own environment
# so containers run the versions the local runtime runs; Debian's bookworm has older, incompatible ones).
# Built by harness/runtime/broker_image.py through the Docker SDK from a context it assembles; no registry.
ARG TARGET_IMAGE=manobench-target:latest
FROM ${TARGET_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/* /usr/share/doc /usr/share/man /var/log/*
# the broker's own settings (harness.runtime.broker.CONFIG): guest from any address, tiny disks work
COPY rabbitmq.conf /etc/rabbitmq/rabbitmq.conf
RUN echo '[].' > /etc/rabbitmq/enabled_plugins
# on sys.path of `python3 -m targets` (run from this directory) whatever the base's site directory is
COPY site/ /opt/manobench/
LABEL manobench=1 manobench.image=bus
