"""router.kafka: the Kafka wire protocol listener - the codec (codec.py over
wire.py and the tables of messages.py), its error codes (error_codes.py) and
the TCP transport (listener.py). The API handlers sit on top."""
