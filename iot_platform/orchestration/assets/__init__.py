"""Assets along the data path: MQTT -> Kafka -> raw table -> rollups -> dashboards."""
