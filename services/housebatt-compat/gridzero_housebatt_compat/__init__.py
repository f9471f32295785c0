"""gridzero-housebatt-compat: the original ESP32 housebatt project's MQTT topics from gridzero's state."""
