"""MQTT transport: client loop, Hermes and native topics, embedded broker."""
