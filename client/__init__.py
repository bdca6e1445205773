"""client: the Python client (producer, consumer, admin), in the conventions of
kafka-python; ``from plinth import Producer, Consumer, Admin``."""
