"""A simulated press line served over real OPC UA and Modbus TCP, for the demo and tests."""
